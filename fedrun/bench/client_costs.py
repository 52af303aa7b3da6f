"""Where a client's time goes on a worker: the same K clients through computations that do
successively more of a client's life, each as one call on one worker.

A round's time on a worker is about a fixed cost per client plus compute per example-step. Each
probe runs the round's K clients in one call, so its time per client is that part of a client's
cost: the TFF call alone, then the dataset built from the key, then iterated once through its
epochs (each in one computation, as the round's client work builds and trains), then the round's
own `up_to_merge` (training, the update and the aggregates), and the same with one more epoch.
The extra epoch prices an epoch of training; what `up_to_merge` costs beyond its epochs is the
fixed cost per client. The same `up_to_merge` with the clients untimed prices timing each client
(learning.client_work), paired call by call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

PROBES = ("call", "dataset", "iterate", "train", "train_one_more_epoch", "train_untimed")
LABELS = {
    "call": "a TFF call that does nothing per client",
    "dataset": "+ build the client's dataset from its key",
    "iterate": "+ iterate it once (all epochs)",
    "train": "the round's up_to_merge (train, update, aggregate)",
    "train_one_more_epoch": "the same with one more epoch",
    "train_untimed": "the same, clients untimed",
}


@dataclass(frozen=True)
class ProbeSet:
    """Each probe's computation and the argument it takes, given the round's training keys."""

    computations: dict[str, Any]
    arguments: dict[str, Callable[[list[str]], Any]]


def build_probes(source: Any, workload: Any, forms: dict[str, Any], states: dict[str, Any]) -> ProbeSet:
    """`forms`: the round's MergeableCompForm for each training probe (at E epochs, at E + 1, and
    untimed at E), and `states` the initial state each takes."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedrun.data.preprocessing import Preprocessing, train_dataset_fn

    build_dataset = train_dataset_fn(source, Preprocessing.of(workload.workload))
    keys_type = tff.FederatedType(np.str_, tff.CLIENTS)

    @tff.tensorflow.computation(np.str_)
    def nothing(key):
        del key
        return tf.constant(1.0)

    @tff.tensorflow.computation(np.str_)
    def untouched(key):  # its cardinality, so that the dataset (and its examples) are made
        return tf.cast(build_dataset(key).cardinality(), tf.float32)

    @tff.tensorflow.computation(np.str_)
    def batches(key):
        return build_dataset(key).reduce(tf.constant(0.0), lambda n, batch: n + 1.0)

    def per_client(computation: Any) -> tff.Computation:
        @tff.federated_computation(keys_type)
        def each(keys):
            return tff.federated_sum(tff.federated_map(computation, keys))

        return each

    def with_state(name: str) -> Callable[[list[str]], list]:
        return lambda keys: [states[name], keys]

    return ProbeSet(
        computations={
            "call": per_client(nothing),
            "dataset": per_client(untouched),
            "iterate": per_client(batches),
            **{name: form.up_to_merge for name, form in forms.items()},
        },
        arguments={
            "call": list,
            "dataset": list,
            "iterate": list,
            **{name: with_state(name) for name in forms},
        },
    )


def breakdown(per_client_ms: dict[str, float], epochs: int) -> dict[str, float]:
    """Each probe's median ms per client, as the parts of a client's cost. Pure."""
    per_epoch = per_client_ms["train_one_more_epoch"] - per_client_ms["train"]
    return {
        "call_ms": per_client_ms["call"],
        "dataset_ms": per_client_ms["dataset"] - per_client_ms["call"],
        "iterate_ms": per_client_ms["iterate"] - per_client_ms["dataset"],
        "train_beyond_iterate_ms": per_client_ms["train"] - per_client_ms["iterate"],
        "epoch_ms": per_epoch,
        "total_ms": per_client_ms["train"],
        "timing_ms": per_client_ms["train"] - per_client_ms["train_untimed"],
        # What a client costs that more epochs would not add: the intercept at zero epochs.
        "fixed_ms": per_client_ms["train"] - epochs * per_epoch,
    }
