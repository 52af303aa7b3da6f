"""The round loop: select, plan, execute, evaluate, commit. Each step is an object the loop calls;
the coordinator owns the server state, the clocks and the run's records."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrun.config import RunConfig
from fedrun.errors import FedrunError
from fedrun.learning.client_time import client_time_summary, merged
from fedrun.loop.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedrun.loop.clock import WallClock
from fedrun.loop.evaluation import Evaluator
from fedrun.loop.records import RoundRecord, ShardRecord, percentiles
from fedrun.loop.run_dir import RunDirectory
from fedrun.loop.steps import RoundSteps, round_steps
from fedrun.runtime.execution import EvalOutcome, RoundRuntime, ShardRun, TrainOutcome
from fedrun.selection.policy import DROP_REASONS, RoundPlan

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource
    from fedrun.system.profiles import ClientTime

_LOG = logging.getLogger(__name__)
_STATUS = logging.getLogger("fedrun.status")


class Coordinator:
    """Owns the server state and the loop; everything else is a step it calls."""

    def __init__(
        self,
        config: RunConfig,
        source: ClientDataSource,
        runtime: RoundRuntime,
        run_dir: RunDirectory,
        on_round: Callable[[RoundRecord], None] = lambda record: None,
        steps: RoundSteps | None = None,
        should_stop: Callable[[], None] = lambda: None,
    ):
        self.config = config
        self.source = source
        self.runtime = runtime
        self.run_dir = run_dir
        self.on_round = on_round
        steps = steps or round_steps(config, source, runtime.algorithm.model_bytes)
        self.steps = steps
        self.selector, self.policy, self.clock = steps.selector, steps.policy, steps.clock
        self.evaluator = Evaluator(runtime, source, config.eval, config.workload.seed, steps.speed_groups)
        self.wall = WallClock()
        self.should_stop = should_stop  # raises at a safe point when the run is to stop
        self.state: Any = None

    def run(self, resume: bool = False) -> Any:
        """Trains up to `rounds` rounds, from the checkpoint when resuming; returns the final
        server state."""
        for round_num in self._rounds_to_run(resume):
            self.should_stop()
            plan = self.plan(round_num)
            outcome = self.execute(round_num, plan)
            evaluation = self.evaluator.evaluate(round_num, outcome.state, plan.cohort)
            self.should_stop()  # a round not yet committed is abandoned, and runs again on resume
            self.commit(round_num, plan, outcome, evaluation)
        weights = self.state.global_model_weights
        self.run_dir.save_weights(list(weights.trainable), list(weights.non_trainable))
        return self.state

    def plan(self, round_num: int) -> RoundPlan:
        """Select and plan: who trains this round and who counts."""
        cohort = self.selector.select(round_num, self.clock.now())
        return self.policy.plan(round_num, cohort, self.clock.now())

    def execute(self, round_num: int, plan: RoundPlan) -> TrainOutcome:
        return self.runtime.train(round_num, self.state, plan.training)

    def commit(
        self, round_num: int, plan: RoundPlan, outcome: TrainOutcome, evaluation: EvalOutcome | None
    ) -> RoundRecord:
        """Records a finished round (durably), checkpoints it when due, and takes its state."""
        if plan.simulated is not None:
            self.clock.advance(plan.simulated.round_s)
        record = self._record(round_num, plan, outcome, evaluation)
        self._check_finite(record, outcome.state)
        if plan.simulated is not None:
            self.run_dir.clients.append_all(self._client_lines(round_num, plan))
        self.run_dir.rounds.append(record)
        every, last = self.config.output.checkpoint_every, self.config.workload.rounds
        self.state = outcome.state
        if round_num % every == 0 or round_num == last:
            self.checkpoint(round_num, self.clock.now() if plan.simulated else 0.0)
        self.on_round(record)
        return record

    def checkpoint(self, round_num: int, clock_s: float) -> None:
        save_checkpoint(self.run_dir.path, round_num, self.state, clock_s)

    def restore(self) -> Checkpoint:
        """The last checkpoint, with the state it holds."""
        return load_checkpoint(self.run_dir.path, self.state)

    def _rounds_to_run(self, resume: bool) -> range:
        self.state = self.runtime.initial_state()
        done = 0
        if resume and not self.run_dir.has_checkpoint:
            _LOG.warning("no round of %s was finished; starting from round 1", self.run_dir.path)
            self.run_dir.start_fresh()
        elif resume:
            checkpoint = self.restore()
            self.run_dir.rounds.keep_up_to(checkpoint.round)
            self.run_dir.clients.keep_up_to(checkpoint.round)
            self.state, done = checkpoint.state, checkpoint.round
            _STATUS.info(
                "resuming %s after round %d: rounds %d to %d to go",
                self.run_dir.path,
                done,
                done + 1,
                self.config.workload.rounds,
            )
            self.clock.advance(checkpoint.clock_s)
            if self.steps.participation is not None:
                counted = [line for line in self.run_dir.clients.read_raw() if line["outcome"] == "counted"]
                self.steps.participation.add(line["index"] for line in counted)
        return range(done + 1, self.config.workload.rounds + 1)

    def _record(
        self, round_num: int, plan: RoundPlan, outcome: TrainOutcome, evaluation: EvalOutcome | None
    ) -> RoundRecord:
        training = plan.training
        trained = outcome.metrics.get("num_examples", 0)
        wall_s = max(outcome.wall_s, 1e-9)
        return RoundRecord(
            round=round_num,
            latency_s=outcome.wall_s,
            start=self.wall.since_start(outcome.start),
            clients=len(training.clients),
            examples=int(sum(training.sizes)),
            examples_trained=trained,
            clients_per_s=len(training.clients) / wall_s,
            examples_per_s=trained / wall_s,
            shards=[self._shard_record(run, plan) for run in outcome.shards],
            bytes_to_workers=outcome.traffic.sent,
            bytes_from_workers=outcome.traffic.received,
            workers=outcome.workers,
            failures=[dataclasses.asdict(failure) for failure in outcome.failures],
            recycled=outcome.recycled,
            train=outcome.metrics,
            eval=evaluation.metrics if evaluation else {},
            eval_latency_s=evaluation.wall_s if evaluation else 0.0,
            wall=percentiles([run.timing.end - run.timing.start for run in outcome.shards]),
            client_time=self._client_time(outcome),
            sim=self._simulated(plan),
            speculation=self._speculation(outcome) if self.config.dispatch.speculate else None,
            lost_copies=[
                {
                    **dataclasses.asdict(lost),
                    "start": self.wall.since_start(lost.start),
                    "end": self.wall.since_start(lost.end),
                }
                for lost in outcome.lost_copies
            ],
            slowed={
                worker: dataclasses.asdict(slowdown) for worker, slowdown in sorted(outcome.slowed.items())
            },
            speeds=outcome.speeds,
        )

    @staticmethod
    def _speculation(outcome: TrainOutcome) -> dict[str, Any]:
        return {
            "copies": outcome.backups,
            "wins": sum(run.timing.backup for run in outcome.shards),
            "wasted_s": sum(lost.end - lost.start for lost in outcome.lost_copies),
        }

    @staticmethod
    def _client_time(outcome: TrainOutcome) -> dict[str, Any] | None:
        """The round's measured client times: its shards' histograms added up, and by worker."""
        by_worker: dict[str, list[dict]] = {}
        for run in outcome.shards:
            if run.client_time is not None:
                by_worker.setdefault(run.timing.worker, []).append(run.client_time)
        if not by_worker:
            return None
        summary = client_time_summary(merged(sum(by_worker.values(), [])), with_histogram=True)
        summary["by_worker"] = {
            worker: client_time_summary(merged(parts), with_histogram=True)
            for worker, parts in sorted(by_worker.items())
        }
        return summary

    def _simulated(self, plan: RoundPlan) -> dict[str, Any] | None:
        simulated = plan.simulated
        if simulated is None:
            return None
        counted = plan.counted if not simulated.abandoned else ()
        dropped = Counter(reason for reason in simulated.reasons if reason)
        if self.steps.participation is not None:
            self.steps.participation.add(plan.cohort.clients[list(counted)])
        return {
            "round_s": simulated.round_s,
            "clock_s": self.clock.now(),
            "selected": len(simulated.times),
            "reported": sum(reason is None for reason in simulated.reasons),
            "dropped": {reason: dropped[reason] for reason in DROP_REASONS},
            "abandoned": simulated.abandoned,
            "client_s": percentiles([time.total_s for time in simulated.times]),
            "participation": self.steps.participation.summary() if self.steps.participation else {},
        }

    def _client_lines(self, round_num: int, plan: RoundPlan) -> list[dict[str, Any]]:
        simulated = plan.simulated
        counted = set(plan.counted)
        lines = []
        for position, (client, time, reason) in enumerate(
            zip(plan.cohort.clients, simulated.times, simulated.reasons)
        ):
            outcome = "counted" if position in counted else "dropped" if reason else "discarded"
            lines.append(
                {
                    **self.client_fields(round_num, int(client), time),
                    "outcome": outcome,
                    "reason": reason or ("abandoned" if simulated.abandoned else None),
                }
            )
        return lines

    def client_fields(self, round_num: int, client: int, time: ClientTime) -> dict[str, Any]:
        """What every line of clients.jsonl says of a client: who, and its simulated times."""
        return {
            "round": round_num,
            "client": self.source.client_name(client),
            "index": client,
            "download_s": time.download_s,
            "compute_s": time.compute_s,
            "upload_s": time.upload_s,
            "total_s": time.total_s,
        }

    def _shard_record(self, run: ShardRun, plan: RoundPlan) -> ShardRecord:
        training = plan.training
        return ShardRecord(
            shard=run.timing.shard,
            worker=run.timing.worker,
            clients=[self.source.client_name(int(training.clients[p])) for p in run.shard.positions],
            examples=int(sum(training.sizes[p] for p in run.shard.positions)),
            start=self.wall.since_start(run.timing.start),
            end=self.wall.since_start(run.timing.end),
            slowest_client_s=float(run.client_time["max_s"]) if run.client_time else None,
            backup=run.timing.backup,
        )

    def _check_finite(self, record: RoundRecord, state: Any) -> None:
        """A diverged round is neither recorded nor checkpointed. TFF's FedAvg silently drops
        clients whose update is not finite, so a round where it dropped them all counts too."""
        problems = []
        if not all(np.all(np.isfinite(w)) for w in state.global_model_weights.trainable):
            problems.append("the model weights are not finite")
        if record.train:  # an abandoned round trains no one
            if not np.isfinite(record.train["loss"]):
                problems.append(f"the training loss is {record.train['loss']}")
            if record.examples_trained == 0:
                problems.append("every client's update was not finite, so FedAvg discarded them all")
        problems += [
            f"the {name} evaluation loss is {m['loss']}"
            for name, m in record.eval.items()
            if not np.isfinite(m["loss"])
        ]
        if problems:
            raise FedrunError(
                f"training diverged in round {record.round}: {'; '.join(problems)}. Rounds up to "
                f"{record.round - 1} and the last finite checkpoint are kept in {self.run_dir.path}; "
                f"lower --client-lr or --server-lr and start a new run"
                + (
                    f" (data: {self.source.summary}; unscaled features diverge easily: see --feature-scale)."
                    if self.source.summary
                    else "."
                )
            )
