"""The round loop: select, plan, execute, evaluate, commit. Each step is an object the loop calls;
the coordinator owns the server state and the run's records."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrun.config import RunConfig
from fedrun.errors import FedrunError
from fedrun.loop.checkpoint import load_checkpoint, save_checkpoint
from fedrun.loop.clock import WallClock
from fedrun.loop.evaluation import Evaluator
from fedrun.loop.records import RoundRecord, ShardRecord
from fedrun.loop.run_dir import RunDirectory
from fedrun.runtime.execution import EvalOutcome, RoundRuntime, ShardRun, TrainOutcome
from fedrun.selection.policy import RoundPlan, RoundPolicy, WaitForAll
from fedrun.selection.selector import UniformSelector

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource


class Coordinator:
    """Owns the server state and the loop; everything else is a step it calls."""

    def __init__(
        self,
        config: RunConfig,
        source: ClientDataSource,
        runtime: RoundRuntime,
        run_dir: RunDirectory,
        on_round: Callable[[RoundRecord], None] = lambda record: None,
        policy: RoundPolicy | None = None,
    ):
        workload = config.workload
        self.config = config
        self.source = source
        self.runtime = runtime
        self.run_dir = run_dir
        self.on_round = on_round
        self.selector = UniformSelector(source, workload.seed, workload.clients_per_round)
        self.policy = policy or WaitForAll()
        self.evaluator = Evaluator(runtime, source, config.eval, workload.seed)
        self.clock = WallClock()
        self.state: Any = None

    def run(self, resume: bool = False) -> Any:
        """Trains up to `rounds` rounds, from the checkpoint when resuming; returns the final
        server state."""
        for round_num in self._rounds_to_run(resume):
            cohort = self.selector.select(round_num, self.clock.now())
            plan = self.policy.plan(round_num, cohort)
            outcome = self.runtime.train(round_num, self.state, plan.training)
            evaluation = self.evaluator.evaluate(round_num, outcome.state, plan.cohort)
            self.commit(round_num, plan, outcome, evaluation)
        weights = self.state.global_model_weights
        self.run_dir.save_weights(list(weights.trainable), list(weights.non_trainable))
        return self.state

    def commit(
        self, round_num: int, plan: RoundPlan, outcome: TrainOutcome, evaluation: EvalOutcome | None
    ) -> RoundRecord:
        """Records a finished round (durably), checkpoints it when due, and takes its state."""
        record = self._record(round_num, plan, outcome, evaluation)
        self._check_finite(record, outcome.state)
        self.run_dir.rounds.append(record)
        every, last = self.config.output.checkpoint_every, self.config.workload.rounds
        if round_num % every == 0 or round_num == last:
            save_checkpoint(self.run_dir.path, round_num, outcome.state)
        self.state = outcome.state
        self.on_round(record)
        return record

    def _rounds_to_run(self, resume: bool) -> range:
        self.state = self.runtime.initial_state()
        done = 0
        if resume:
            checkpoint = load_checkpoint(self.run_dir.path, self.state)
            self.run_dir.rounds.keep_up_to(checkpoint.round)
            self.state, done = checkpoint.state, checkpoint.round
        return range(done + 1, self.config.workload.rounds + 1)

    def _record(
        self, round_num: int, plan: RoundPlan, outcome: TrainOutcome, evaluation: EvalOutcome | None
    ) -> RoundRecord:
        training = plan.training
        trained = outcome.metrics["num_examples"]
        return RoundRecord(
            round=round_num,
            latency_s=outcome.wall_s,
            start=self.clock.since_start(outcome.start),
            clients=len(training.clients),
            examples=int(sum(training.sizes)),
            examples_trained=trained,
            clients_per_s=len(training.clients) / outcome.wall_s,
            examples_per_s=trained / outcome.wall_s,
            shards=[self._shard_record(run, plan) for run in outcome.shards],
            bytes_to_workers=outcome.traffic.sent,
            bytes_from_workers=outcome.traffic.received,
            workers=outcome.workers,
            failures=[dataclasses.asdict(failure) for failure in outcome.failures],
            recycled=outcome.recycled,
            train=outcome.metrics,
            eval=evaluation.metrics if evaluation else {},
            eval_latency_s=evaluation.wall_s if evaluation else 0.0,
        )

    def _shard_record(self, run: ShardRun, plan: RoundPlan) -> ShardRecord:
        training = plan.training
        return ShardRecord(
            shard=run.timing.shard,
            worker=run.timing.worker,
            clients=[self.source.client_name(int(training.clients[p])) for p in run.shard.positions],
            examples=int(sum(training.sizes[p] for p in run.shard.positions)),
            start=self.clock.since_start(run.timing.start),
            end=self.clock.since_start(run.timing.end),
        )

    def _check_finite(self, record: RoundRecord, state: Any) -> None:
        """A diverged round is neither recorded nor checkpointed. TFF's FedAvg silently drops
        clients whose update is not finite, so a round where it dropped them all counts too."""
        problems = []
        if not all(np.all(np.isfinite(w)) for w in state.global_model_weights.trainable):
            problems.append("the model weights are not finite")
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
                f"lower --client-lr or --server-lr and start a new run."
            )
