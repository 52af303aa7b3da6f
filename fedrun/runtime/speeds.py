"""Each worker's measured speed, for shards sized so that unequal workers finish together.

Speed is seconds per unit of work (a client's examples plus one for its fixed cost, as
selection.sharding counts it), a running estimate over the worker's shards: the last shard
weighs SMOOTHING, so a worker that changes speed is followed within a few rounds while one
noisy shard moves the estimate only part of the way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedrun.runtime.dispatch import ShardTiming
from fedrun.selection.sharding import Shard, client_costs

SMOOTHING = 0.5


class WorkerSpeeds:
    """Seconds per unit of work by worker id; a worker not measured yet counts as the median."""

    def __init__(self) -> None:
        self._seconds_per_unit: dict[str, float] = {}

    def update(self, shards: Sequence[Shard], timings: Sequence[ShardTiming], sizes: Sequence[int]) -> None:
        """Takes in a round's shards as they ran (timings of the attempts whose result counted)."""
        costs = client_costs(sizes)
        for timing in timings:
            units = float(costs[list(shards[timing.shard].positions)].sum())
            measured = (timing.end - timing.start) / units
            previous = self._seconds_per_unit.get(timing.worker)
            self._seconds_per_unit[timing.worker] = (
                measured if previous is None else SMOOTHING * measured + (1 - SMOOTHING) * previous
            )

    def shares(self, workers: Sequence[str]) -> list[float]:
        """Each worker's share of a round's work, in proportion to its speed."""
        if not self._seconds_per_unit:
            return [1.0 / len(workers)] * len(workers)
        typical = float(np.median(list(self._seconds_per_unit.values())))
        speeds = [1.0 / self._seconds_per_unit.get(worker, typical) for worker in workers]
        return [speed / sum(speeds) for speed in speeds]

    def as_dict(self) -> dict[str, float]:
        return dict(sorted(self._seconds_per_unit.items()))
