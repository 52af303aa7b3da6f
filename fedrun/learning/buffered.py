"""Buffered asynchronous FedAvg (FedBuff, Nguyen et al. 2022) as two TFF computations, composed
from the same `tff.learning.templates` parts as the synchronous FedAvg (distributor, client work,
aggregator, finalizer), so that the two share their state and checkpoints.

- `client_form`: clients that started from one model version train from it; the result is the
  sum over them of (staleness weight x examples x model delta), the sum of their examples and
  their metrics. Compiled to MergeableCompForm and merged by plain addition, so the shards of
  every start version that lands in one server update fold into one aggregate.
- `server_step`: update = that sum / the examples, applied with the server optimizer (the
  synchronous finalizer): with every weight 1 it is FedAvg's example-weighted mean.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


@dataclass(frozen=True)
class BufferedComputations:
    # ([weights, staleness weight]@SERVER, client data@CLIENTS) -> [weighted delta sum, examples, metrics]
    client_form: tff.framework.MergeableCompForm
    # (finalizer state, weights, weighted delta sum, examples) -> [finalizer state, new weights]
    server_step: tff.Computation


def build_buffered(
    weights_type: tff.types.StructType,
    client_work: tff.learning.templates.ClientWorkProcess,
    finalizer: tff.learning.templates.FinalizerProcess,
    dataset_computation: tff.Computation | None,
) -> BufferedComputations:
    """`dataset_computation`: client key -> dataset, built on the workers (None: datasets are sent)."""
    update_type = weights_type.trainable
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    summation = tff.aggregators.SumFactory().create(update_type)
    data_type = client_work.next.type_signature.parameter[2]
    server_type = tff.FederatedType(
        collections.OrderedDict(weights=weights_type, staleness_weight=np.float32), tff.SERVER
    )
    client_result_type = client_work.next.type_signature.result.result.member

    @tff.tensorflow.computation(client_result_type, np.float32)
    def weighted(result, staleness_weight):
        scale = result.update_weight * staleness_weight
        return tf.nest.map_structure(lambda delta: delta * scale, result.update), result.update_weight

    @tff.federated_computation(server_type, data_type)
    def client_round(server, client_data):
        weights = distributor.next(distributor.initialize(), server.weights).result
        work = client_work.next(client_work.initialize(), weights, client_data)
        scaled, examples = tff.federated_map(
            weighted, (work.result, tff.federated_broadcast(server.staleness_weight))
        )
        total = summation.next(summation.initialize(), scaled).result
        return total, tff.federated_sum(examples), work.measurements

    if dataset_computation is not None:
        client_round = tff.simulation.compose_dataset_computation_with_computation(
            dataset_computation, client_round
        )

    finalizer_state_type = finalizer.initialize.type_signature.result
    total_type = tff.FederatedType(update_type, tff.SERVER)
    examples_type = tff.FederatedType(np.float32, tff.SERVER)

    @tff.tensorflow.computation(update_type, np.float32)
    def mean(total, examples):
        return tf.nest.map_structure(lambda t: tf.math.divide_no_nan(t, examples), total)

    @tff.federated_computation(
        finalizer_state_type, tff.FederatedType(weights_type, tff.SERVER), total_type, examples_type
    )
    def server_step(state, weights, total, examples):
        update = tff.federated_map(mean, (total, examples))
        output = finalizer.next(state, weights, update)
        return output.state, output.result

    return BufferedComputations(
        client_form=tff.backends.native.compile_to_mergeable_comp_form(client_round),
        server_step=server_step,
    )
