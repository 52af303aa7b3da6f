"""The seed tutorial's client preprocessing (shuffle, repeat, batch, flatten): as TFF computations
that build a client's datasets from its key on the worker, or on the coordinator for shipping."""

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedrun.data.source import ClientDataSource


@dataclass(frozen=True)
class Preprocessing:
    epochs: int
    batch_size: int
    shuffle_buffer: int

    @classmethod
    def of(cls, workload) -> "Preprocessing":
        """A run's preprocessing, from its [workload] section (fedrun.config.WorkloadConfig)."""
        w = workload
        return cls(epochs=w.epochs, batch_size=w.batch_size, shuffle_buffer=w.shuffle_buffer)


def _per_client_options() -> tf.data.Options:
    """tf.data's static graph optimizations and autotuning off: they rewrite each dataset when its
    iterator is made, ~4 ms per client on a worker (two thirds of a small client's whole cost),
    and cannot pay off over a client's few batches. Neither changes the examples or their order.
    No `prefetch` either, for the same reason: its background thread costs each client more than
    overlapping a few batches saves, on workers whose cores the clients already share."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return options


def _examples(x: tf.Tensor, y: tf.Tensor) -> tf.data.Dataset:
    """The client's examples as the model reads them (flat float32 features, labels [1]),
    formatted whole before batching: the same batches as formatting each batch."""
    flat = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    return tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=tf.cast(flat, tf.float32), y=tf.reshape(y, [-1, 1]))
    )


def _train_pipeline(x: tf.Tensor, y: tf.Tensor, seed, prep: Preprocessing) -> tf.data.Dataset:
    """shuffle(buffer, seed) / repeat(epochs) / batch."""
    ds = _examples(x, y).shuffle(prep.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat(prep.epochs).batch(prep.batch_size)
    return ds.with_options(_per_client_options())


def _eval_pipeline(x: tf.Tensor, y: tf.Tensor, prep: Preprocessing) -> tf.data.Dataset:
    """batch: evaluation sees every example once, in order."""
    ds = _examples(x, y).batch(prep.batch_size)
    return ds.with_options(_per_client_options())


def train_dataset_fn(source: ClientDataSource, prep: Preprocessing) -> Callable[[tf.Tensor], tf.data.Dataset]:
    """Training key -> the client's batches, as TF ops to trace into a computation that then runs
    on the worker (learning.client_work traces it into the client's training)."""

    def build(key: tf.Tensor) -> tf.data.Dataset:
        seed_str, data_key = tf.unstack(tf.strings.split(key, "|", maxsplit=1), num=2)
        return _train_pipeline(
            *source.client_examples(data_key), tf.strings.to_number(seed_str, tf.int64), prep
        )

    return build


def train_dataset_computation(source: ClientDataSource, prep: Preprocessing) -> tff.Computation:
    """Training key -> the client's batches, built on the worker that runs it."""
    return tff.tensorflow.computation(train_dataset_fn(source, prep), tff.TensorType(np.str_))


def eval_dataset_computation(source: ClientDataSource, prep: Preprocessing) -> tff.Computation:
    """Evaluation key -> the client's test batches, built on the worker that runs it."""
    return tff.tensorflow.computation(
        lambda key: _eval_pipeline(*source.client_examples(key), prep), tff.TensorType(np.str_)
    )


def shipped_train_datasets(
    source: ClientDataSource, prep: Preprocessing, keys: list[str]
) -> list[tf.data.Dataset]:
    """The same batches built on the coordinator from its own copy of the examples, which then
    travel to the workers as tensors (for data that only the coordinator can read)."""
    datasets = []
    for key in keys:
        seed, data_key = key.split("|", 1)
        seed_tensor = tf.constant(int(seed), tf.int64)
        datasets.append(_train_pipeline(*_in_memory(source, data_key), seed_tensor, prep))
    return datasets


def shipped_eval_datasets(
    source: ClientDataSource, prep: Preprocessing, keys: list[str]
) -> list[tf.data.Dataset]:
    return [_eval_pipeline(*_in_memory(source, key), prep) for key in keys]


def _in_memory(source: ClientDataSource, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The client's examples as numpy arrays: constants in the dataset, which reads no file."""
    x, y = source.client_examples(tf.constant(key))
    return x.numpy(), y.numpy()
