"""Buffered asynchronous FedAvg (FedBuff, Nguyen et al. 2022) as TFF computations, composed from
the same `tff.learning.templates` parts as the synchronous FedAvg (distributor, client work,
aggregator, finalizer), so that the two share their state and checkpoints.

- `client_form(V)`: one server update's clients, trained from V server versions at once. The
  distributor broadcasts the V versions' weights stacked; each client trains from the version it
  started from (its index) and its result is scaled by that version's staleness weight. The
  result is the sum over the clients of (staleness weight x examples x model delta), the sum of
  their examples and their metrics, compiled to MergeableCompForm: shards are cut by cost alone,
  however many versions an update mixes, so a round of high concurrency costs as many calls as
  a synchronous one. V is rounded up to a power of two (a few compiled variants per run).
- `server_step`: update = that sum / the examples, applied with the server optimizer (the
  synchronous finalizer): with every weight 1 it is FedAvg's example-weighted mean.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure


def version_slots(versions: int) -> int:
    """The stack size compiled for `versions` distinct versions: the next power of two."""
    return 1 << max(versions - 1, 0).bit_length()


def _stacked_type(type_spec: tff.Type, count: int) -> tff.Type:
    if isinstance(type_spec, tff.TensorType):
        return tff.TensorType(type_spec.dtype, [count, *type_spec.shape])
    elements = [(name, _stacked_type(member, count)) for name, member in structure.to_elements(type_spec)]
    container = getattr(type_spec, "python_container", None)
    if container is None:
        return tff.StructType(elements)
    if all(name is None for name, _ in elements):
        return tff.StructWithPythonType([member for _, member in elements], container)
    return tff.StructWithPythonType(elements, container)


class BufferedComputations:
    """The client computation (one variant per stack size, built when first needed) and the
    server step."""

    def __init__(
        self,
        weights_type: tff.types.StructType,
        client_work: tff.learning.templates.ClientWorkProcess,
        finalizer: tff.learning.templates.FinalizerProcess,
        dataset_computation: tff.Computation | None,
    ):
        """`dataset_computation`: client key -> dataset, built on the workers (None: datasets are sent)."""
        self._weights_type = weights_type
        self._client_work = client_work
        self._dataset_computation = dataset_computation
        self.server_step = _server_step(weights_type, finalizer)
        self._forms: dict[int, tff.framework.MergeableCompForm] = {}

    def client_form(self, slots: int) -> tff.framework.MergeableCompForm:
        """(server {weights: the versions stacked, staleness_weights: [slots]}, each client's
        version index, client data) -> [weighted delta sum, examples, client work measurements]."""
        if slots not in self._forms:
            self._forms[slots] = self._build_client_form(slots)
        return self._forms[slots]

    def _build_client_form(self, slots: int) -> tff.framework.MergeableCompForm:
        weights_type, client_work = self._weights_type, self._client_work
        stacked_type = _stacked_type(weights_type, slots)
        distributor = tff.learning.templates.build_broadcast_process(stacked_type)
        summation = tff.aggregators.SumFactory().create(weights_type.trainable)
        data_type = client_work.next.type_signature.parameter[2]
        server_type = tff.FederatedType(
            collections.OrderedDict(
                weights=stacked_type, staleness_weights=tff.TensorType(np.float32, [slots])
            ),
            tff.SERVER,
        )
        client_result_type = client_work.next.type_signature.result.result.member

        @tff.tensorflow.computation(stacked_type, tff.TensorType(np.float32, [slots]), np.int32)
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

        if self._dataset_computation is not None:
            client_round = tff.simulation.compose_dataset_computation_with_computation(
                self._dataset_computation, client_round
            )
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
