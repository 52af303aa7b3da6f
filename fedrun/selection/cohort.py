"""A round's cohort: who trains, how much data each holds, and the keys workers build data from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedrun.data.keys import TEST, TRAIN, train_key
from fedrun.selection.sampling import sample_clients, shuffle_seeds

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource

# The groups a round's model can be evaluated on (`--eval-on`).
EVAL_GROUPS = ("round_clients", "heldout", "sample")


@dataclass(frozen=True)
class Cohort:
    clients: np.ndarray  # client indices, in sampling order
    sizes: list[int]  # examples per client in the split used
    keys: list[str]  # one dataset key per client, for the workers

    def subset(self, positions: Sequence[int]) -> Cohort:
        """The clients at `positions` (ascending), in cohort order."""
        return Cohort(
            self.clients[list(positions)],
            [self.sizes[p] for p in positions],
            [self.keys[p] for p in positions],
        )


def training_cohort(source: ClientDataSource, seed: int, round_num: int, k: int) -> Cohort:
    """K clients sampled without replacement for (seed, round), with their shuffle seeds."""
    return cohort_of(source, seed, round_num, sample_clients(seed, round_num, source.population, k))


def cohort_of(source: ClientDataSource, seed: int, round_num: int, clients: np.ndarray) -> Cohort:
    """These clients' training data for the round, each with its shuffle seed."""
    seeds = shuffle_seeds(seed, round_num, clients)
    return Cohort(
        clients=clients,
        sizes=[source.num_examples(int(c), TRAIN) for c in clients],
        keys=[train_key(source.client_key(int(c), TRAIN), int(s)) for c, s in zip(clients, seeds)],
    )


def evaluation_cohort(source: ClientDataSource, clients: np.ndarray) -> Cohort:
    """The given clients' held-out test examples."""
    return Cohort(
        clients=clients,
        sizes=[source.num_examples(int(c), TEST) for c in clients],
        keys=[source.client_key(int(c), TEST) for c in clients],
    )


def evaluation_groups(
    source: ClientDataSource, eval_on: str, seed: int, size: int, round_clients: np.ndarray
) -> dict[str, Cohort]:
    """The client groups a round's model is evaluated on, by name (`eval_on`, comma-separated):
    the round's own clients, the held-out clients that never train, or a fixed sample of `size`
    training clients (drawn once from round 0's stream, which no training round uses)."""
    clients = dict(
        zip(
            EVAL_GROUPS,
            (
                lambda: round_clients,
                source.heldout_clients,
                lambda: sample_clients(seed, 0, source.population, min(size, source.population)),
            ),
        )
    )
    return {name: evaluation_cohort(source, clients[name]()) for name in eval_on.split(",")}
