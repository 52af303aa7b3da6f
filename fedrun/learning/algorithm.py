"""The federated algorithm: FedAvg from TFF's parts (learning.fed_avg) and TFF's federated
evaluation, compiled once to MergeableCompForm so the coordinator can run `up_to_merge` shard by
shard. TFF's own `build_weighted_fed_avg` is built on request, as the reference.

Client data reaches the workers in one of two ways (`data_placement`). "workers": the
computations take client keys and each worker builds its clients' datasets itself, so a round
sends keys and weights only. "coordinator": the coordinator builds the datasets from its own copy
of the data and sends them as tensors, for data the workers cannot read; same batches, same result.
"""

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow_federated as tff

from fedrun.config import RunConfig
from fedrun.data import preprocessing
from fedrun.data.preprocessing import Preprocessing
from fedrun.data.source import ClientDataSource
from fedrun.learning.buffered import BufferedComputations, build_buffered
from fedrun.learning.fed_avg import fed_avg as fedrun_fed_avg
from fedrun.learning.models import DEFAULT_INIT, ModelInit, ModelSpec, create_model_fn
from fedrun.learning.registry import CLIENT_LOOPS, OPTIMIZERS


@dataclass(frozen=True)
class FederatedAlgorithm:
    training: tff.learning.templates.LearningProcess  # next: (state, client data@CLIENTS) -> (state, metrics)
    evaluation: tff.learning.templates.LearningProcess
    train_form: tff.framework.MergeableCompForm
    eval_form: tff.framework.MergeableCompForm
    train_data: Callable[[list[str]], list]  # a cohort's training keys -> the client data a round sends
    eval_data: Callable[[list[str]], list]  # a cohort's test keys -> the client data evaluation sends
    buffered: BufferedComputations | None = None  # buffered asynchronous aggregation's, if asked for

    @property
    def model_bytes(self) -> int:
        """The trainable weights' serialized size: what a client downloads and uploads each round."""
        weights = self.training.initialize.type_signature.result.member.global_model_weights.trainable
        return sum(np.dtype(w.dtype).itemsize * int(np.prod(w.shape)) for w in weights)


def build_algorithm(
    source: ClientDataSource,
    *,
    model: str,
    model_init: ModelInit = DEFAULT_INIT,
    epochs: int,
    batch_size: int,
    shuffle_buffer: int,
    client_lr: float,
    server_lr: float,
    client_optimizer: str = "sgd",
    client_momentum: float = 0.0,
    server_optimizer: str = "sgd",
    server_momentum: float = 0.0,
    data_placement: str = "workers",
    client_loop: str = "iterator",
    time_clients: bool = True,
    buffered: bool = False,
    tff_fed_avg: bool = False,
) -> FederatedAlgorithm:
    """`time_clients`: each client's local training is timed on its worker (client_work).
    `buffered`: also build buffered asynchronous aggregation's computations from the same parts.
    `tff_fed_avg`: TFF's own `build_weighted_fed_avg` instead, composed with the dataset
    computation as TFF's simulations compose it, untimed: the yardstick that tests and the bench
    compare fedrun with."""
    prep = Preprocessing(epochs=epochs, batch_size=batch_size, shuffle_buffer=shuffle_buffer)
    train_data = preprocessing.train_dataset_computation(source, prep)
    eval_data = preprocessing.eval_dataset_computation(source, prep)
    model_fn = create_model_fn(
        model,
        ModelSpec(
            train_data.type_signature.result.element, tuple(source.element_spec[0].shape), source.num_classes
        ),
        model_init,
    )
    loop = CLIENT_LOOPS[client_loop].load()
    client_opt = OPTIMIZERS[client_optimizer].load()(client_lr, client_momentum)
    server_opt = OPTIMIZERS[server_optimizer].load()(server_lr, server_momentum)
    on_workers = data_placement == "workers"
    if tff_fed_avg:
        training = tff.learning.algorithms.build_weighted_fed_avg(
            model_fn, client_optimizer_fn=client_opt, server_optimizer_fn=server_opt, loop_implementation=loop
        )
        if on_workers:
            training = tff.simulation.compose_dataset_computation_with_learning_process(train_data, training)
        async_parts = None
    else:
        build_dataset = preprocessing.train_dataset_fn(source, prep) if on_workers else None
        fed_avg = fedrun_fed_avg(
            model_fn, client_opt, server_opt, loop, timed=time_clients, build_dataset=build_dataset
        )
        training = fed_avg.process
        async_parts = (
            build_buffered(fed_avg.weights_type, fed_avg.client_work, fed_avg.finalizer) if buffered else None
        )
    fed_eval = tff.learning.algorithms.build_fed_eval(model_fn, loop_implementation=loop)
    if on_workers:
        evaluation = tff.simulation.compose_dataset_computation_with_learning_process(eval_data, fed_eval)
        send_train, send_eval = list, list
    else:
        evaluation = fed_eval
        send_train = functools.partial(preprocessing.shipped_train_datasets, source, prep)
        send_eval = functools.partial(preprocessing.shipped_eval_datasets, source, prep)
    return FederatedAlgorithm(
        training=training,
        evaluation=evaluation,
        train_form=tff.backends.native.compile_to_mergeable_comp_form(training.next),
        eval_form=tff.backends.native.compile_to_mergeable_comp_form(evaluation.next),
        train_data=send_train,
        eval_data=send_eval,
        buffered=async_parts,
    )


def algorithm_for(
    config: RunConfig, source: ClientDataSource, *, tff_fed_avg: bool = False
) -> FederatedAlgorithm:
    """The algorithm a run's configuration describes; `tff_fed_avg`: with TFF's own FedAvg (the
    reference, build_algorithm)."""
    w = config.workload
    return build_algorithm(
        source,
        model=w.model,
        model_init=ModelInit(w.model_init, w.seed),
        epochs=w.epochs,
        batch_size=w.batch_size,
        shuffle_buffer=w.shuffle_buffer,
        client_lr=w.client_lr,
        server_lr=w.server_lr,
        client_optimizer=w.client_optimizer,
        client_momentum=w.client_momentum,
        server_optimizer=w.server_optimizer,
        server_momentum=w.server_momentum,
        data_placement=config.data.placement,
        client_loop=w.client_loop,
        time_clients=config.observe.client_timing,
        buffered=config.aggregation.buffered,
        tff_fed_avg=tff_fed_avg,
    )


def named_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """fedrun's names for a model's metrics: Keras models call accuracy by its metric's name."""
    accuracy = next(name for name in ("accuracy", "sparse_categorical_accuracy") if name in metrics)
    return {
        "loss": float(metrics["loss"]),
        "accuracy": float(metrics[accuracy]),
        "num_examples": int(metrics["num_examples"]),
    }


def train_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """FedAvg's client metrics (example-weighted over the round's clients)."""
    return named_metrics(metrics["client_work"]["train"])


def eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Federated evaluation's metrics for this call (not accumulated over rounds)."""
    return named_metrics(metrics["client_work"]["eval"]["current_round_metrics"])
