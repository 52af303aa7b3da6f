"""Buffered asynchronous FedAvg (FedBuff, Nguyen et al. 2022) as TFF computations, composed from
the same `tff.learning.templates` parts as the synchronous FedAvg (distributor, client work,
aggregator, finalizer), so that the two share their state and checkpoints.

- `client_form`: one server update's clients, trained from the V server versions they started
  from. The distributor broadcasts the V versions' weights stacked (V is a dynamic dimension: one
  computation serves every V); each client trains from its version (its index) and its result is
  scaled by that version's staleness weight. The result is the sum over the clients of
  (staleness weight x examples x model delta), the sum of their examples and their metrics,
  compiled to MergeableCompForm: shards are cut by cost alone, however many versions an update
  mixes, so an update at high concurrency costs as many calls as a synchronous round.
- `server_step`: update = that sum / the examples, applied with the server optimizer (the
  synchronous finalizer): with every weight 1 it is FedAvg's example-weighted mean.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure


def _stacked_type(type_spec: tff.Type) -> tff.Type:
    """The type of any number of values of `type_spec` stacked along a new first dimension."""
    if isinstance(type_spec, tff.TensorType):
        return tff.TensorType(type_spec.dtype, [None, *type_spec.shape])
    elements = [(name, _stacked_type(member)) for name, member in structure.to_elements(type_spec)]
    container = getattr(type_spec, "python_container", None)
    if container is None:
        return tff.StructType(elements)
    if all(name is None for name, _ in elements):
        return tff.StructWithPythonType([member for _, member in elements], container)
    return tff.StructWithPythonType(elements, container)


@dataclass(frozen=True)
class BufferedComputations:
    # ({weights: versions stacked, staleness_weights: [versions]}@SERVER, version index@CLIENTS,
    #  client data@CLIENTS) -> [weighted delta sum, examples, client work measurements]
    client_form: tff.framework.MergeableCompForm
    # (finalizer state, weights, weighted delta sum, examples) -> [finalizer state, new weights]
    server_step: tff.Computation


def build_buffered(
    weights_type: tff.types.StructType,
    client_work: tff.templates.MeasuredProcess,
    finalizer: tff.learning.templates.FinalizerProcess,
) -> BufferedComputations:
    """`client_work`: synchronous FedAvg's (learning.fed_avg), on the client data it takes: keys
    when the workers build the datasets, else datasets."""
    return BufferedComputations(
        _client_form(weights_type, client_work), _server_step(weights_type, finalizer)
    )


def _client_form(
    weights_type: tff.types.StructType, client_work: tff.templates.MeasuredProcess
) -> tff.framework.MergeableCompForm:
    stacked_type = _stacked_type(weights_type)
    staleness_type = tff.TensorType(np.float32, [None])
    distributor = tff.learning.templates.build_broadcast_process(stacked_type)
    summation = tff.aggregators.SumFactory().create(weights_type.trainable)
    data_type = client_work.next.type_signature.parameter[2]
    server_type = tff.FederatedType(
        collections.OrderedDict(weights=stacked_type, staleness_weights=staleness_type), tff.SERVER
    )
    client_result_type = client_work.next.type_signature.result.result.member

    @tff.tensorflow.computation(stacked_type, staleness_type, np.int32)
    def select(stacked, staleness_weights, index):
        return tf.nest.map_structure(lambda v: v[index], stacked), staleness_weights[index]

    @tff.tensorflow.computation(client_result_type, np.float32)
    def weighted(result, staleness_weight):
        scale = result.update_weight * staleness_weight
        return tf.nest.map_structure(lambda delta: delta * scale, result.update), result.update_weight

    @tff.federated_computation(server_type, tff.FederatedType(np.int32, tff.CLIENTS), data_type)
    def client_round(server, version_index, client_data):
        stacked = distributor.next(distributor.initialize(), server.weights).result
        weights, staleness_weight = tff.federated_map(
            select, (stacked, tff.federated_broadcast(server.staleness_weights), version_index)
        )
        work = client_work.next(client_work.initialize(), weights, client_data)
        scaled, examples = tff.federated_map(weighted, (work.result, staleness_weight))
        total = summation.next(summation.initialize(), scaled).result
        return total, tff.federated_sum(examples), work.measurements

    return tff.backends.native.compile_to_mergeable_comp_form(client_round)


def _server_step(
    weights_type: tff.types.StructType, finalizer: tff.learning.templates.FinalizerProcess
) -> tff.Computation:
    """(finalizer state, weights, weighted delta sum, examples) -> [finalizer state, new weights]."""
    update_type = weights_type.trainable

    @tff.tensorflow.computation(update_type, np.float32)
    def mean(total, examples):
        return tf.nest.map_structure(lambda t: tf.math.divide_no_nan(t, examples), total)

    @tff.federated_computation(
        finalizer.initialize.type_signature.result,
        tff.FederatedType(weights_type, tff.SERVER),
        tff.FederatedType(update_type, tff.SERVER),
        tff.FederatedType(np.float32, tff.SERVER),
    )
    def server_step(state, weights, total, examples):
        output = finalizer.next(state, weights, tff.federated_map(mean, (total, examples)))
        return output.state, output.result

    return server_step
