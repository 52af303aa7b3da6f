"""The seed tutorial's client preprocessing, as TFF computations that run on the workers."""

import collections
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
    prefetch: int = 2


def train_key(data_key: str, shuffle_seed: int) -> str:
    """A training key also carries the client's shuffle seed, so its batches are the same
    whichever worker builds them."""
    return f"{shuffle_seed}|{data_key}"


def _batch_format(x: tf.Tensor, y: tf.Tensor) -> collections.OrderedDict:
    flat = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    return collections.OrderedDict(x=tf.cast(flat, tf.float32), y=tf.reshape(y, [-1, 1]))


def train_dataset_computation(source: ClientDataSource, prep: Preprocessing) -> tff.Computation:
    """key -> shuffle(buffer, seed) / repeat(epochs) / batch / flatten / prefetch."""

    def build(key):
        seed_str, data_key = tf.unstack(tf.strings.split(key, "|", maxsplit=1), num=2)
        seed = tf.strings.to_number(seed_str, tf.int64)
        ds = source.client_dataset(data_key)
        ds = ds.shuffle(prep.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return ds.repeat(prep.epochs).batch(prep.batch_size).map(_batch_format).prefetch(prep.prefetch)

    return tff.tensorflow.computation(build, tff.TensorType(np.str_))


def eval_dataset_computation(source: ClientDataSource, prep: Preprocessing) -> tff.Computation:
    """key -> batch / flatten: evaluation sees every example once, in order."""

    def build(key):
        ds = source.client_dataset(key)
        return ds.batch(prep.batch_size).map(_batch_format).prefetch(prep.prefetch)

    return tff.tensorflow.computation(build, tff.TensorType(np.str_))
