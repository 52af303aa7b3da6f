"""The round loop: sample, shard, train, evaluate, record."""

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedrun.checkpoint import load_checkpoint, save_checkpoint
from fedrun.cohort import Cohort, evaluation_groups, training_cohort
from fedrun.config import RunConfig
from fedrun.data.source import ClientDataSource
from fedrun.dispatch import Dispatcher, ShardTiming
from fedrun.errors import FedrunError
from fedrun.learning import FederatedAlgorithm, eval_metrics, train_metrics
from fedrun.results import RoundRecord, RunDirectory, ShardRecord
from fedrun.rounds import run_sharded
from fedrun.sharding import Shard, make_shards


class Coordinator:
    """Owns the server state and the loop; everything else is a function it calls."""

    def __init__(self, config: RunConfig, source: ClientDataSource, algorithm: FederatedAlgorithm,
                 dispatcher: Dispatcher, run_dir: RunDirectory,
                 on_round: Callable[[RoundRecord], None] = lambda record: None):
        self.config = config
        self.source = source
        self.algorithm = algorithm
        self.dispatcher = dispatcher
        self.run_dir = run_dir
        self.on_round = on_round
        self._t0 = time.monotonic()

    def run(self, resume: bool = False) -> Any:
        """Train up to `config.rounds` rounds, from the checkpoint when resuming; returns the
        final server state."""
        state = self.dispatcher.call(self.algorithm.training.initialize)
        eval_state = self.dispatcher.call(self.algorithm.evaluation.initialize)
        done = 0
        if resume:
            state, done = self._restore(state)
        for round_num in range(done + 1, self.config.rounds + 1):
            self.recycle_workers_if_due(round_num)
            cohort = training_cohort(self.source, self.config.seed, round_num, self.config.clients_per_round)
            state, record = self.train_round(round_num, state, cohort)
            if self.config.eval_every and round_num % self.config.eval_every == 0:
                record = self.evaluate(record, state, eval_state, cohort)
            self._check_finite(record, state)
            self.run_dir.append_round(record)
            if round_num % self.config.checkpoint_every == 0 or round_num == self.config.rounds:
                save_checkpoint(self.run_dir.path, round_num, state)
            self.on_round(record)
        weights = state.global_model_weights
        self.run_dir.save_weights(list(weights.trainable), list(weights.non_trainable))
        return state

    def recycle_workers_if_due(self, round_num: int) -> None:
        """Fresh workers before every `recycle_workers_every`-th round after the first."""
        every = self.config.recycle_workers_every
        if every and round_num > 1 and (round_num - 1) % every == 0:
            self.dispatcher.recycle()

    def _restore(self, template: Any) -> tuple[Any, int]:
        checkpoint = load_checkpoint(self.run_dir.path, template)
        self.run_dir.keep_rounds_up_to(checkpoint.round)
        return checkpoint.state, checkpoint.round

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
        problems += [f"the {name} evaluation loss is {m['loss']}"
                     for name, m in record.eval.items() if not np.isfinite(m["loss"])]
        if problems:
            raise FedrunError(
                f"training diverged in round {record.round}: {'; '.join(problems)}. Rounds up to "
                f"{record.round - 1} and the last finite checkpoint are kept in {self.run_dir.path}; "
                f"lower --client-lr or --server-lr and start a new run.")

    def train_round(self, round_num: int, state: Any, cohort: Cohort) -> tuple[Any, RoundRecord]:
        start = time.monotonic()
        sent, received = self.dispatcher.traffic()
        shards = make_shards(cohort.sizes, self.config.num_shards)
        output, timings = run_sharded(self.dispatcher, self.algorithm.train_form, state,
                                      self.algorithm.train_data(cohort.keys), shards)
        latency = time.monotonic() - start
        sent_after, received_after = self.dispatcher.traffic()
        train = train_metrics(output.metrics)
        failures = self.dispatcher.take_failures()
        record = RoundRecord(
            round=round_num,
            latency_s=latency,
            start=start - self._t0,
            clients=len(cohort.clients),
            examples=int(sum(cohort.sizes)),
            examples_trained=train["num_examples"],
            clients_per_s=len(cohort.clients) / latency,
            examples_per_s=train["num_examples"] / latency,
            shards=[self._shard_record(t, shards[t.shard], cohort) for t in timings],
            bytes_to_workers=sent_after - sent,
            bytes_from_workers=received_after - received,
            workers=len(self.dispatcher.workers),
            failures=[dataclasses.asdict(f) for f in failures],
            recycled=self.dispatcher.take_recycled(),
            train=train,
        )
        return output.state, record

    def evaluate(self, record: RoundRecord, state: Any, eval_state: Any, cohort: Cohort) -> RoundRecord:
        """Federated evaluation of the new model on the test examples of each `eval_on` group
        (the round's clients, the held-out clients that never train, a fixed sample)."""
        start = time.monotonic()
        eval_state = self.dispatcher.call(self.algorithm.evaluation.set_model_weights,
                                          [eval_state, state.global_model_weights])
        groups = evaluation_groups(self.source, self.config.eval_on, self.config.seed, self.config.eval_clients,
                                   cohort.clients)
        results = {name: self._evaluate_on(eval_state, group)
                   for name, group in groups.items() if len(group.clients)}
        return dataclasses.replace(record, eval=results, eval_latency_s=time.monotonic() - start)

    def _evaluate_on(self, eval_state: Any, cohort: Cohort) -> dict[str, float]:
        shards = make_shards(cohort.sizes, self.config.num_shards)
        output, _ = run_sharded(self.dispatcher, self.algorithm.eval_form, eval_state,
                                self.algorithm.eval_data(cohort.keys), shards)
        return eval_metrics(output.metrics)

    def _shard_record(self, timing: ShardTiming, shard: Shard, cohort: Cohort) -> ShardRecord:
        return ShardRecord(
            shard=timing.shard,
            worker=timing.worker,
            clients=[self.source.client_name(int(cohort.clients[p])) for p in shard.positions],
            examples=int(sum(cohort.sizes[p] for p in shard.positions)),
            start=timing.start - self._t0,
            end=timing.end - self._t0,
        )
