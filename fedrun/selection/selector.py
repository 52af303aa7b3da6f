"""The select step of a round: the clients sampled to take part."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedrun.selection.cohort import Cohort, training_cohort

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource


class UniformSelector:
    """`count` clients uniformly without replacement, seeded by (seed, round)."""

    def __init__(self, source: ClientDataSource, seed: int, count: int):
        self._source = source
        self._seed = seed
        self._count = count

    def select(self, round_num: int, now_s: float) -> Cohort:
        del now_s  # every client is always available
        return training_cohort(self._source, self._seed, round_num, self._count)
