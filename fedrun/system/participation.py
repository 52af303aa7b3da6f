"""Who has contributed updates so far: how often each client counted, the part of the population
that never has, and the fastest vs slowest devices' share of all updates (slow devices are not
a random sample, and their data may differ). A device's speed is its simulated time for the same
task (the median client's examples), so a client with much data on a fast device counts as fast."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np


class Participation:
    def __init__(self, population: int, device_s: Callable[[int], float], fast_s: float, slow_s: float):
        """`device_s(client)`: how slow a client's device is (seconds for a fixed task); `fast_s`
        and `slow_s` bound the fastest and slowest quartiles of devices."""
        self._population = population
        self._device_s = device_s
        self._bounds = (fast_s, slow_s)
        self.counts: Counter[int] = Counter()
        self._by_speed: Counter[str] = Counter()

    def add(self, clients: Iterable[int]) -> None:
        """Clients whose updates counted."""
        fast_s, slow_s = self._bounds
        for client in clients:
            self.counts[int(client)] += 1
            seconds = self._device_s(int(client))
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


def quartile_bounds(device_s: np.ndarray) -> tuple[float, float]:
    """The 25th and 75th percentile of a sample of devices' times."""
    fast, slow = np.percentile(device_s, [25, 75])
    return float(fast), float(slow)
