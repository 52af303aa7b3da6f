"""The federated algorithm: TFF's FedAvg and federated evaluation, fed by client keys, compiled
once to MergeableCompForm so the coordinator can run `up_to_merge` shard by shard."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tensorflow_federated as tff

from fedrun.data.preprocessing import Preprocessing, eval_dataset_computation, train_dataset_computation
from fedrun.data.source import ClientDataSource
from fedrun.models import create_model_fn


@dataclass(frozen=True)
class FederatedAlgorithm:
    training: tff.learning.templates.LearningProcess  # next: (state, {str}@CLIENTS) -> (state, metrics)
    evaluation: tff.learning.templates.LearningProcess
    train_form: tff.framework.MergeableCompForm
    eval_form: tff.framework.MergeableCompForm


def build_algorithm(source: ClientDataSource, *, model: str, epochs: int, batch_size: int,
                    shuffle_buffer: int, client_lr: float, server_lr: float) -> FederatedAlgorithm:
    prep = Preprocessing(epochs=epochs, batch_size=batch_size, shuffle_buffer=shuffle_buffer)
    train_data = train_dataset_computation(source, prep)
    eval_data = eval_dataset_computation(source, prep)
    model_fn = create_model_fn(model, train_data.type_signature.result.element, source.num_classes)
    fed_avg = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_lr),
    )
    fed_eval = tff.learning.algorithms.build_fed_eval(model_fn)
    training = tff.simulation.compose_dataset_computation_with_learning_process(train_data, fed_avg)
    evaluation = tff.simulation.compose_dataset_computation_with_learning_process(eval_data, fed_eval)
    return FederatedAlgorithm(
        training=training,
        evaluation=evaluation,
        train_form=tff.backends.native.compile_to_mergeable_comp_form(training.next),
        eval_form=tff.backends.native.compile_to_mergeable_comp_form(evaluation.next),
    )


def _named(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        "loss": float(metrics["loss"]),
        "accuracy": float(metrics["sparse_categorical_accuracy"]),
        "num_examples": int(metrics["num_examples"]),
    }


def train_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """FedAvg's client metrics (example-weighted over the round's clients)."""
    return _named(metrics["client_work"]["train"])


def eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Federated evaluation's metrics for this call (not accumulated over rounds)."""
    return _named(metrics["client_work"]["eval"]["current_round_metrics"])
