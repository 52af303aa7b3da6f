"""Who has contributed updates so far: how often each client counted, the part of the population
that never has, and the fastest vs slowest devices' share of all updates (slow devices are not
a random sample, and their data may differ)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np


class Participation:
    def __init__(self, population: int, fast_s: float, slow_s: float):
        """`fast_s` and `slow_s`: the round times that bound the fastest and slowest quartiles."""
        self._population = population
        self._bounds = (fast_s, slow_s)
        self.counts: Counter[int] = Counter()
        self._by_speed = Counter()

    def add(self, clients: Iterable[int], round_s: Iterable[float]) -> None:
        """Clients whose updates counted, with their simulated round times."""
        fast_s, slow_s = self._bounds
        for client, seconds in zip(clients, round_s):
            self.counts[int(client)] += 1
            self._by_speed[
                "fastest" if seconds <= fast_s else "slowest" if seconds >= slow_s else "middle"
            ] += 1

    def summary(self) -> dict[str, float]:
        updates = sum(self.counts.values())
        return {
            "population": self._population,
            "clients_contributed": len(self.counts),
            "never_fraction": 1.0 - len(self.counts) / self._population,
            "fastest_quartile_share": self._by_speed["fastest"] / updates if updates else 0.0,
            "slowest_quartile_share": self._by_speed["slowest"] / updates if updates else 0.0,
        }


def quartile_bounds(round_s: np.ndarray) -> tuple[float, float]:
    """The 25th and 75th percentile of a sample of devices' round times."""
    fast, slow = np.percentile(round_s, [25, 75])
    return float(fast), float(slow)
