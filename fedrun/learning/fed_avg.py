"""fedrun's FedAvg: TFF's parts (broadcast, the client work of learning.client_work, the
example-weighted mean, the server optimizer) composed as `compose_learning_process` composes them,
and over client keys when the workers build the datasets.

TFF composes only client work on datasets, so the process over keys takes its `initialize` and
its weight and hyperparameter accessors from the one over datasets (the state is the same) and
repeats TFF's `next` with the client work over keys.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedrun.learning.client_work import fed_avg_client_work


@dataclass(frozen=True)
class FedAvg:
    process: tff.learning.templates.LearningProcess  # next: (state, client data@CLIENTS)
    client_work: tff.templates.MeasuredProcess  # the process's, on the same client data
    finalizer: tff.learning.templates.FinalizerProcess
    weights_type: tff.types.StructType


def initial_weights(model_fn: Callable[[], tff.learning.models.VariableModel]) -> tff.Computation:
    @tff.tensorflow.computation
    def weights():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    return weights


def fed_avg(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    loop: tff.learning.LoopImplementation,
    *,
    timed: bool,
    build_dataset: Callable[[tf.Tensor], tf.data.Dataset] | None,
) -> FedAvg:
    """`build_weighted_fed_avg` from the same TFF parts, its clients timed if `timed`; on client
    keys if `build_dataset` (a key to its dataset) is given, else on datasets."""
    weights_fn = initial_weights(model_fn)
    weights_type = weights_fn.type_signature.result
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    aggregator = tff.aggregators.MeanFactory().create(weights_type.trainable, tff.TensorType(np.float32))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)
    on_datasets = fed_avg_client_work(model_fn, client_optimizer, loop, timed=timed)
    process = tff.learning.templates.compose_learning_process(
        weights_fn, distributor, on_datasets, aggregator, finalizer
    )
    if build_dataset is None:
        return FedAvg(process, on_datasets, finalizer, weights_type)
    on_keys = fed_avg_client_work(model_fn, client_optimizer, loop, timed=timed, build_dataset=build_dataset)

    @tff.federated_computation(
        process.initialize.type_signature.result, tff.FederatedType(np.str_, tff.CLIENTS)
    )
    def next_fn(state, keys):  # compose_learning_process's next, with on_keys
        distributed = distributor.next(state.distributor, state.global_model_weights)
        work = on_keys.next(state.client_work, distributed.result, keys)
        aggregated = aggregator.next(state.aggregator, work.result.update, work.result.update_weight)
        finalized = finalizer.next(state.finalizer, state.global_model_weights, aggregated.result)
        new_state = tff.federated_zip(
            tff.learning.templates.LearningAlgorithmState(
                finalized.result, distributed.state, work.state, aggregated.state, finalized.state
            )
        )
        metrics = tff.federated_zip(
            collections.OrderedDict(
                distributor=distributed.measurements,
                client_work=work.measurements,
                aggregator=aggregated.measurements,
                finalizer=finalized.measurements,
            )
        )
        return tff.learning.templates.LearningProcessOutput(new_state, metrics)

    over_keys = tff.learning.templates.LearningProcess(
        process.initialize,
        next_fn,
        process.get_model_weights,
        process.set_model_weights,
        get_hparams_fn=process.get_hparams,
        set_hparams_fn=process.set_hparams,
    )
    return FedAvg(over_keys, on_keys, finalizer, weights_type)
