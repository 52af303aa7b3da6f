"""The select step of a round: the clients sampled to take part."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from fedrun.selection.cohort import Cohort, cohort_of, training_cohort
from fedrun.selection.sampling import round_rng

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource

# Candidates drawn per client wanted before a round settles for fewer (few devices online).
_MAX_DRAWS_PER_CLIENT = 50


class UniformSelector:
    """`count` clients uniformly without replacement, seeded by (seed, round)."""

    def __init__(self, source: ClientDataSource, seed: int, count: int):
        self._source = source
        self._seed = seed
        self._count = count

    def select(self, round_num: int, now_s: float, count: int | None = None) -> Cohort:
        """`count` clients (default: the selector's), drawn from the round's stream."""
        del now_s  # every client is always available
        count = min(count or self._count, self._source.population)
        return training_cohort(self._source, self._seed, round_num, count)


class AvailableSelector(UniformSelector):
    """`count` clients uniformly among those available at the simulated time, by rejection: a
    round draws O(count / fraction available) candidates, whatever the population. When too few
    are online it takes those it found (as FedScale's client manager does)."""

    def __init__(
        self, source: ClientDataSource, seed: int, count: int, available: Callable[[int, float], bool]
    ):
        super().__init__(source, seed, count)
        self._available = available

    def select(self, round_num: int, now_s: float, count: int | None = None) -> Cohort:
        population = self._source.population
        wanted = count or self._count
        rng = round_rng(self._seed, round_num, "sample_available")
        chosen: list[int] = []
        seen: set[int] = set()
        draws = 0
        while len(chosen) < wanted and draws < _MAX_DRAWS_PER_CLIENT * wanted and len(seen) < population:
            for client in rng.integers(0, population, size=2 * wanted).tolist():
                draws += 1
                if client not in seen:
                    seen.add(client)
                    if self._available(client, now_s):
                        chosen.append(client)
                        if len(chosen) == wanted:
                            break
        return cohort_of(self._source, self._seed, round_num, np.array(chosen, dtype=np.int64))
