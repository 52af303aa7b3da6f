"""The plan step of a round: which of the selected clients train and count, decided before any
is dispatched (a client that will not count costs no wall time). A policy is a pure, seeded
function of the round and its cohort, the same on every backend and worker count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fedrun.selection.cohort import Cohort


@dataclass(frozen=True)
class RoundPlan:
    cohort: Cohort  # every client selected for the round
    counted: tuple[int, ...]  # positions in `cohort` of the clients that train and count

    @property
    def training(self) -> Cohort:
        return self.cohort.subset(self.counted)


class RoundPolicy(Protocol):
    def plan(self, round_num: int, cohort: Cohort) -> RoundPlan: ...


class WaitForAll:
    """Every selected client counts: the round waits for the slowest."""

    def plan(self, round_num: int, cohort: Cohort) -> RoundPlan:
        return RoundPlan(cohort, tuple(range(len(cohort.clients))))
