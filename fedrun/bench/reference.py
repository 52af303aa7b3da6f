"""The same training run through TFF's own single-process local context: the yardstick that
tests (equality) and benchmarks compare fedrun with."""

import collections
import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff

from fedrun.data.preprocessing import Preprocessing
from fedrun.data.source import ClientDataSource
from fedrun.learning.algorithm import FederatedAlgorithm, train_metrics
from fedrun.selection.cohort import training_cohort


@contextlib.contextmanager
def tff_local_context() -> Iterator[None]:
    """Installs TFF's sync local C++ context for the duration of the block.

    TFF starts its own worker_binary and stops it only in a finalizer (it leaks on a normal
    exit), which sends SIGINT and waits without a bound (forever, if SIGINT is ignored): the block
    ends by terminating what TFF started, letting the finalizer reap it, then killing what is left.
    """
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    context = tff.backends.native.create_sync_local_cpp_execution_context()
    try:
        with tff.framework.get_context_stack().install(context):
            yield
    finally:
        started = [p for p in me.children(recursive=True) if p.pid not in before]
        for process in started:
            process.terminate()
        del context
        gc.collect()
        _, alive = psutil.wait_procs(started, timeout=5)
        for process in alive:
            process.kill()


def reference_training(
    algorithm: FederatedAlgorithm, source: ClientDataSource, *, seed: int, rounds: int, clients_per_round: int
) -> tuple[Any, list[dict[str, float]]]:
    """All of each round's clients in one `next` call on the current TFF context."""
    state = algorithm.training.initialize()
    metrics = []
    for round_num in range(1, rounds + 1):
        cohort = training_cohort(source, seed, round_num, clients_per_round)
        output = algorithm.training.next(state, cohort.keys)
        state = output.state
        metrics.append(train_metrics(output.metrics))
    return state, metrics


TUTORIAL_PREFETCH = 2  # batches: the tutorial prefetches after batching


def tutorial_datasets(
    source: ClientDataSource, prep: Preprocessing, keys: list[str]
) -> list[tf.data.Dataset]:
    """A round's client datasets as TFF's EMNIST tutorial builds them: in Python, from each
    client's examples, with a map per batch and tf.data's default options. Shuffle comes before
    repeat, with each client's seed, as in fedrun: the batches are fedrun's."""
    datasets = []
    for key in keys:
        seed, data_key = key.split("|", 1)
        x, y = (tensor.numpy() for tensor in source.client_examples(tf.constant(data_key)))
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
            prep.shuffle_buffer, seed=tf.constant(int(seed), tf.int64), reshuffle_each_iteration=True
        )
        batches = dataset.repeat(prep.epochs).batch(prep.batch_size).map(_tutorial_batch_format)
        datasets.append(batches.prefetch(TUTORIAL_PREFETCH))
    return datasets


def _tutorial_batch_format(x: tf.Tensor, y: tf.Tensor) -> collections.OrderedDict:
    flat = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    return collections.OrderedDict(x=tf.cast(flat, tf.float32), y=tf.reshape(y, [-1, 1]))
