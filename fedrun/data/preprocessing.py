"""The seed tutorial's client preprocessing (shuffle, repeat, batch, flatten): as TFF computations
that build a client's datasets from its key on the worker, or on the coordinator for shipping."""

import collections
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedrun.data.source import ClientDataSource

_READ_BATCH = 1024  # examples per read when the coordinator loads a client (a huge batch preallocates)


@dataclass(frozen=True)
class Preprocessing:
    epochs: int
    batch_size: int
    shuffle_buffer: int
    prefetch: int = 2


def _batch_format(x: tf.Tensor, y: tf.Tensor) -> collections.OrderedDict:
    flat = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    return collections.OrderedDict(x=tf.cast(flat, tf.float32), y=tf.reshape(y, [-1, 1]))


def _train_pipeline(raw: tf.data.Dataset, seed, prep: Preprocessing) -> tf.data.Dataset:
    """shuffle(buffer, seed) / repeat(epochs) / batch / flatten / prefetch."""
    ds = raw.shuffle(prep.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.repeat(prep.epochs).batch(prep.batch_size).map(_batch_format).prefetch(prep.prefetch)


def _eval_pipeline(raw: tf.data.Dataset, prep: Preprocessing) -> tf.data.Dataset:
    """batch / flatten: evaluation sees every example once, in order."""
    return raw.batch(prep.batch_size).map(_batch_format).prefetch(prep.prefetch)


def train_dataset_computation(source: ClientDataSource, prep: Preprocessing) -> tff.Computation:
    """Training key -> the client's batches, built on the worker that runs it."""

    def build(key):
        seed_str, data_key = tf.unstack(tf.strings.split(key, "|", maxsplit=1), num=2)
        return _train_pipeline(
            source.client_dataset(data_key), tf.strings.to_number(seed_str, tf.int64), prep
        )

    return tff.tensorflow.computation(build, tff.TensorType(np.str_))


def eval_dataset_computation(source: ClientDataSource, prep: Preprocessing) -> tff.Computation:
    """Evaluation key -> the client's test batches, built on the worker that runs it."""
    return tff.tensorflow.computation(
        lambda key: _eval_pipeline(source.client_dataset(key), prep), tff.TensorType(np.str_)
    )


def shipped_train_datasets(
    source: ClientDataSource, prep: Preprocessing, keys: list[str]
) -> list[tf.data.Dataset]:
    """The same batches built on the coordinator from its own copy of the examples, which then
    travel to the workers as tensors (for data that only the coordinator can read)."""
    datasets = []
    for key in keys:
        seed, data_key = key.split("|", 1)
        datasets.append(_train_pipeline(_in_memory(source, data_key), tf.constant(int(seed), tf.int64), prep))
    return datasets


def shipped_eval_datasets(
    source: ClientDataSource, prep: Preprocessing, keys: list[str]
) -> list[tf.data.Dataset]:
    return [_eval_pipeline(_in_memory(source, key), prep) for key in keys]


def _in_memory(source: ClientDataSource, key: str) -> tf.data.Dataset:
    """The client's raw examples as constants, so the dataset no longer reads any file."""
    features, labels = source.element_spec
    parts = list(source.client_dataset(tf.constant(key)).batch(_READ_BATCH).as_numpy_iterator())
    if not parts:
        return tf.data.Dataset.from_tensor_slices(
            (tf.zeros([0, *features.shape], features.dtype), tf.zeros([0], labels.dtype))
        )
    return tf.data.Dataset.from_tensor_slices(tuple(np.concatenate(column) for column in zip(*parts)))
