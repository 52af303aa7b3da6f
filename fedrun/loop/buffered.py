"""The loop of buffered asynchronous aggregation (FedBuff): each iteration is one server update.

The schedule (asynchrony.schedule) says which results the update takes and which version each
trained from; the coordinator keeps the weights of every version a client in flight still
trains from, and checkpoints them with the schedule, so a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrun.asynchrony.schedule import BufferedSchedule, ServerUpdate
from fedrun.asynchrony.staleness import staleness_weighting
from fedrun.config import RunConfig
from fedrun.loop.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedrun.loop.coordinator import Coordinator
from fedrun.loop.records import RoundRecord
from fedrun.runtime.execution import EvalOutcome, TrainingGroup, TrainOutcome
from fedrun.selection.policy import DROP_REASONS, RoundPlan, SimulatedRound

# Why a result of buffered-async does not count.
DISCARD_REASONS = ("stale", "dropout", "unavailable")


@dataclass(frozen=True)
class UpdatePlan(RoundPlan):
    update: ServerUpdate | None = None


class BufferedCoordinator(Coordinator):
    """`rounds` counts server updates; every step but plan and execute is the synchronous one."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.steps.schedule is None:
            raise ValueError("a buffered coordinator needs the steps of a buffered-async run")
        self.schedule: BufferedSchedule = self.steps.schedule
        self._weighting = staleness_weighting(self.config.aggregation.staleness_weight)
        self.versions: dict[int, Any] = {}  # server version -> its model weights, while in use

    def plan(self, round_num: int) -> UpdatePlan:
        if not self.versions:  # a fresh run: every first client trains from the initial model
            self.versions[0] = self.state.global_model_weights
        update = self.schedule.next_update()
        cohort = update.cohort
        simulated = SimulatedRound(
            tuple(f.time for f in update.results), (None,) * len(update.results), update.since_s, False
        )
        return UpdatePlan(cohort, tuple(range(len(cohort.clients))), simulated, update)

    def execute(self, round_num: int, plan: UpdatePlan) -> TrainOutcome:
        update = plan.update
        groups = [
            TrainingGroup(positions, self.versions[version], self._weighting(update.staleness_from(version)))
            for version, positions in update.groups()
        ]
        return self.runtime.train_buffered(round_num, self.state, plan.cohort, groups)

    def commit(
        self, round_num: int, plan: UpdatePlan, outcome: TrainOutcome, evaluation: EvalOutcome | None
    ) -> RoundRecord:
        self.keep_version(plan.update.version, outcome.state)
        return super().commit(round_num, plan, outcome, evaluation)

    def keep_version(self, version: int, state: Any) -> None:
        """Keeps the new version's weights; forgets those no client trains from any more."""
        self.versions[version] = state.global_model_weights
        in_use = self.schedule.versions_in_use() | {version}
        self.versions = {v: w for v, w in self.versions.items() if v in in_use}

    def checkpoint(self, round_num: int, clock_s: float) -> None:
        versions = sorted(self.versions)
        save_checkpoint(
            self.run_dir.path,
            round_num,
            {"server": self.state, "versions": [self.versions[v] for v in versions]},
            clock_s,
            {"schedule": self.schedule.state(), "versions": versions},
        )

    def restore(self) -> Checkpoint:
        weights = self.state.global_model_weights

        def template(extra: dict[str, Any] | None) -> Any:
            if not extra or "schedule" not in extra:
                raise ValueError("it was not written by a buffered-async run")
            return {"server": self.state, "versions": [weights] * len(extra["versions"])}

        checkpoint = load_checkpoint(self.run_dir.path, template)
        self.schedule.restore(checkpoint.extra["schedule"])
        self.versions = dict(zip(checkpoint.extra["versions"], checkpoint.state["versions"]))
        return dataclasses.replace(checkpoint, state=checkpoint.state["server"])

    def _record(
        self, round_num: int, plan: UpdatePlan, outcome: TrainOutcome, evaluation: Any
    ) -> RoundRecord:
        record = super()._record(round_num, plan, outcome, evaluation)
        update = plan.update
        staleness = [update.staleness(f) for f in update.results]
        discarded = Counter(reason for _, reason in update.discarded)
        sim = {
            **record.sim,
            "selected": update.started,
            "dropped": {reason: discarded[reason] for reason in DROP_REASONS + ("stale",)},
        }
        buffered = {
            "version": update.version,
            "clock_s": update.clock_s,
            "buffered": len(update.results),
            "started": update.started,
            "in_flight": update.in_flight,
            "staleness": {
                "p50": float(np.percentile(staleness, 50)) if staleness else 0.0,
                "max": max(staleness, default=0),
                "mean": float(np.mean(staleness)) if staleness else 0.0,
            },
            "staleness_counts": {str(s): n for s, n in sorted(Counter(staleness).items())},
            "discarded": {reason: discarded[reason] for reason in DISCARD_REASONS},
            "versions_kept": len(self.versions),
        }
        return dataclasses.replace(record, sim=sim, buffered=buffered)

    def _client_lines(self, round_num: int, plan: UpdatePlan) -> list[dict[str, Any]]:
        """A line per result that arrived: buffered (counted) or discarded (dropped, with why)."""
        update = plan.update
        arrived = [(f, None) for f in update.results] + list(update.discarded)
        return [
            {
                **self.client_fields(round_num, flight.client, flight.time),
                "start_s": flight.start_s,
                "version": flight.version,
                "staleness": update.staleness(flight),
                "outcome": "counted" if reason is None else "dropped",
                "reason": reason,
            }
            for flight, reason in arrived
        ]


def coordinator_class(config: RunConfig) -> type[Coordinator]:
    """The loop a run's aggregation needs."""
    return BufferedCoordinator if config.aggregation.buffered else Coordinator
