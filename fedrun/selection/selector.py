"""The select step of a round: the clients sampled to take part."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from fedrun.selection.cohort import Cohort, cohort_of
from fedrun.selection.sampling import round_rng, sample_clients

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

    def select(self, round_num: int, now_s: float) -> Cohort:
        return self.cohort(round_num, self.sample(round_num, now_s, self._count))

    def sample(self, round_num: int, now_s: float, count: int) -> np.ndarray:
        """`count` client indices drawn from the round's stream (fewer if too few are online)."""
        del now_s  # every client is always available
        return sample_clients(
            self._seed, round_num, self._source.population, min(count, self._source.population)
        )

    def cohort(self, round_num: int, clients: np.ndarray) -> Cohort:
        """These clients' training data for the round (sizes, keys with shuffle seeds)."""
        return cohort_of(self._source, self._seed, round_num, clients)


class AvailableSelector(UniformSelector):
    """`count` clients uniformly among those available at the simulated time, by rejection: a
    round draws O(count / fraction available) candidates, whatever the population. When too few
    are online it takes those it found (as FedScale's client manager does)."""

    def __init__(
        self, source: ClientDataSource, seed: int, count: int, available: Callable[[int, float], bool]
    ):
        super().__init__(source, seed, count)
        self._available = available

    def sample(self, round_num: int, now_s: float, count: int) -> np.ndarray:
        population = self._source.population
        wanted = count
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
        return np.array(chosen, dtype=np.int64)
