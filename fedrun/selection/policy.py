"""The plan step of a round: which of the selected clients train and count, decided before any
is dispatched (a client that will not count costs no wall time, as in FedScale's simulator). A
policy is a pure, seeded function of the round, its cohort and the clients' simulated times, the
same on every backend and worker count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fedrun.selection.cohort import Cohort
from fedrun.selection.sampling import round_rng

if TYPE_CHECKING:
    from fedrun.config import PolicyConfig
    from fedrun.system.models import SystemModel
    from fedrun.system.profiles import ClientTime

# Why a selected client's update does not count.
DROP_REASONS = ("deadline", "over_selection", "dropout", "unavailable")


@dataclass(frozen=True)
class SimulatedRound:
    """The round on the virtual clock."""

    times: tuple[ClientTime, ...]  # per selected client, in cohort order
    reasons: tuple[str | None, ...]  # per selected client: None if it reported in time
    round_s: float  # simulated time from selection to the round's close
    abandoned: bool  # too few reported: the model is left unchanged


@dataclass(frozen=True)
class RoundPlan:
    cohort: Cohort  # every client selected for the round
    counted: tuple[int, ...]  # positions in `cohort` of the clients that train and count, ascending
    simulated: SimulatedRound | None = None  # None without a system model

    @property
    def training(self) -> Cohort:
        return self.cohort.subset(self.counted)


class RoundPolicy(Protocol):
    def plan(self, round_num: int, cohort: Cohort, now_s: float) -> RoundPlan: ...


class WaitForAll:
    """Every selected client counts: the round waits for the slowest (no simulated time)."""

    def plan(self, round_num: int, cohort: Cohort, now_s: float) -> RoundPlan:
        return RoundPlan(cohort, tuple(range(len(cohort.clients))))


class DevicePolicy:
    """Production FL's round close on simulated devices (Bonawitz et al. 2019; FedScale):

    each selected client fails with probability `dropout`, is lost if its device goes offline
    before it finishes, or misses the deadline; of those that report, the first `target` to
    finish count (over-selection keeps the fastest); a round with fewer than `min_reporting`
    reports is abandoned. The round closes when `target` clients have reported, else at the
    deadline, else when the last reporter finishes. With none of the options every client counts
    and the round lasts as long as the slowest.
    """

    def __init__(self, system: SystemModel, config: PolicyConfig, target: int, seed: int):
        self._system = system
        self._config = config
        self._target = target
        self._seed = seed

    def plan(self, round_num: int, cohort: Cohort, now_s: float) -> RoundPlan:
        config = self._config
        times = tuple(self._system.client_time(int(c), n) for c, n in zip(cohort.clients, cohort.sizes))
        fails = round_rng(self._seed, round_num, "dropout").random(len(times)) < config.dropout
        reasons: list[str | None] = []
        for client, time, failed in zip(cohort.clients, times, fails):
            if failed:
                reasons.append("dropout")
            elif self._system.has_availability and not self._system.available(
                int(client), now_s + time.total_s
            ):
                reasons.append("unavailable")
            elif config.deadline_s and time.total_s > config.deadline_s:
                reasons.append("deadline")
            else:
                reasons.append(None)
        reporters = sorted(
            (p for p, reason in enumerate(reasons) if reason is None), key=lambda p: (times[p].total_s, p)
        )
        counted, late = reporters[: self._target], reporters[self._target :]
        for position in late:
            reasons[position] = "over_selection"
        if len(counted) == self._target:
            round_s = max((times[p].total_s for p in counted), default=0.0)
        elif config.deadline_s:
            round_s = config.deadline_s
        else:
            round_s = max((times[p].total_s for p in counted), default=0.0)
        abandoned = len(counted) < max(config.min_reporting, 1)
        simulated = SimulatedRound(times, tuple(reasons), float(round_s), abandoned)
        return RoundPlan(cohort, () if abandoned else tuple(sorted(counted)), simulated)
