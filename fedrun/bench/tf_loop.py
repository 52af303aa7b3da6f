"""FedAvg as a plain single-process TensorFlow loop: the yardstick with no federated runtime.

One `tf.function` trains a client from the global weights with SGD over its preprocessed
dataset; deltas are averaged by example count in numpy and applied with server SGD. Client data
comes from the very graph of the TFF dataset computation the workers run, so every client sees
the same examples in the same shuffled order as under fedrun or TFF.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow.python.eager import context

from fedrun.learning.models import ModelFn


@dataclass(frozen=True)
class LoopRound:
    weights: list[np.ndarray]  # new global trainable weights
    metrics: dict[str, float]  # what TFF's FedAvg reports: loss, accuracy, num_examples


def dataset_from_computation(comp: tff.Computation) -> Callable[[tf.Tensor], tf.data.Dataset]:
    """`key -> dataset` for a TFF `str -> sequence` TensorFlow computation, usable in tf.function.

    Imports the computation's serialized graph rather than rebuilding the pipeline, so it is
    the same graph (ops, seeds) that a TFF worker runs.
    """
    proto = tff.framework.ConcreteComputation.get_proto(comp).tensorflow
    graph_def = tf.compat.v1.GraphDef()
    proto.graph_def.Unpack(graph_def)
    element_spec = tff.types.type_to_tf_tensor_specs(comp.type_signature.result.element)
    # The graph's functions (e.g. the batches' map function) are registered with the runtime
    # here: imported into a tf.function's graph, some were not found when it ran.
    for function_def in graph_def.library.function:
        context.context().add_function_def(function_def)

    def build(key: tf.Tensor) -> tf.data.Dataset:
        [variant] = tf.graph_util.import_graph_def(
            graph_def,
            input_map={proto.parameter.tensor.tensor_name: key},
            return_elements=[proto.result.sequence.variant_tensor_name],
            name="client_data",
        )
        return tf.data.experimental.from_variant(variant, element_spec)

    return build


class TfLoopFedAvg:
    """Weighted FedAvg with client and server SGD, one client after another in this process."""

    def __init__(
        self,
        model_fn: ModelFn,
        train_data: tff.Computation,
        eval_data: tff.Computation,
        client_lr: float,
        server_lr: float,
    ):
        self._model = model_fn()
        self._server_lr = server_lr
        variables = self._model.trainable_variables
        self.initial_weights = [v.numpy() for v in variables]
        build_dataset = dataset_from_computation(train_data)
        build_eval_dataset = dataset_from_computation(eval_data)

        def train_step(batch) -> tf.Tensor:
            with tf.GradientTape() as tape:
                output = self._model.forward_pass(batch, training=True)
            gradients = tape.gradient(output.loss, variables)
            for variable, gradient in zip(variables, gradients):
                variable.assign_sub(client_lr * gradient)
            return _totals(batch, output)

        def eval_step(batch) -> tf.Tensor:
            return _totals(batch, self._model.forward_pass(batch, training=False))

        @tf.function(autograph=False)
        def train_client(key, global_weights):
            for variable, value in zip(variables, global_weights):
                variable.assign(value)
            totals = _sum_over(build_dataset(key), train_step)
            return [v.read_value() for v in variables], totals

        @tf.function(autograph=False)
        def evaluate_client(key, weights):
            for variable, value in zip(variables, weights):
                variable.assign(value)
            return _sum_over(build_eval_dataset(key), eval_step)

        self._train_client = train_client
        self._evaluate_client = evaluate_client

    def train_round(self, weights: Sequence[np.ndarray], keys: Sequence[str]) -> LoopRound:
        """One round over `keys` (each client's training-data key) from global `weights`."""
        weights = [np.asarray(w, np.float32) for w in weights]
        delta_sums = [np.zeros(w.shape, np.float64) for w in weights]
        totals = np.zeros(3)
        for key in keys:
            trained, client_totals = self._train_client(tf.constant(key), weights)
            client_totals = client_totals.numpy()
            for delta_sum, w, t in zip(delta_sums, weights, trained):
                delta_sum += client_totals[0] * (w - t.numpy())
            totals += client_totals
        new_weights = [
            (w - self._server_lr * d / totals[0]).astype(np.float32) for w, d in zip(weights, delta_sums)
        ]
        return LoopRound(new_weights, _metrics(totals))

    def evaluate(self, weights: Sequence[np.ndarray], keys: Sequence[str]) -> dict[str, float]:
        """Loss and accuracy of `weights` over the examples of the evaluation keys."""
        weights = [np.asarray(w, np.float32) for w in weights]
        return _metrics(sum(self._evaluate_client(tf.constant(key), weights).numpy() for key in keys))


def _totals(batch, output) -> tf.Tensor:
    """[examples, loss * examples, correct predictions] of one batch."""
    labels = tf.reshape(tf.cast(batch["y"], tf.int64), [-1])
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(output.predictions, axis=-1), labels), tf.float32))
    n = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.stack([n, output.loss * n, correct])


def _sum_over(dataset: tf.data.Dataset, step: Callable[[Any], tf.Tensor]) -> tf.Tensor:
    """The sum of `step(batch)` over the dataset, batch after batch.

    An iterator in a while loop, not `dataset.reduce`: TF 2.14 instantiates a reduce function
    anew at every call, which costs ~40 ms per client here, more than the client's training.
    """
    batches = iter(dataset)
    _, totals = tf.while_loop(
        lambda batch, totals: batch.has_value(),
        lambda batch, totals: (batches.get_next_as_optional(), totals + step(batch.get_value())),
        [batches.get_next_as_optional(), tf.zeros([3])],
    )
    return totals


def _metrics(totals: np.ndarray) -> dict[str, float]:
    """What TFF's learning metrics report: example-weighted loss and accuracy, and the count."""
    num_examples, loss_sum, correct = totals
    return {
        "loss": float(loss_sum / num_examples),
        "accuracy": float(correct / num_examples),
        "num_examples": int(num_examples),
    }
