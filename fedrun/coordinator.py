"""The round loop: sample, shard, train, evaluate, record."""

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from fedrun.cohort import Cohort, evaluation_cohort, training_cohort
from fedrun.config import RunConfig
from fedrun.data.source import ClientDataSource
from fedrun.dispatch import Dispatcher, ShardTiming
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
        self.heldout = evaluation_cohort(source, source.heldout_clients())

    def run(self) -> Any:
        """Train for `config.rounds` rounds; returns the final server state."""
        state = self.dispatcher.call(self.algorithm.training.initialize)
        eval_state = self.dispatcher.call(self.algorithm.evaluation.initialize)
        for round_num in range(1, self.config.rounds + 1):
            cohort = training_cohort(self.source, self.config.seed, round_num, self.config.clients_per_round)
            state, record = self.train_round(round_num, state, cohort)
            if self.config.eval_every and round_num % self.config.eval_every == 0:
                record = self.evaluate(record, state, eval_state, cohort)
            self.run_dir.append_round(record)
            self.on_round(record)
        weights = state.global_model_weights
        self.run_dir.save_weights(list(weights.trainable), list(weights.non_trainable))
        return state

    def train_round(self, round_num: int, state: Any, cohort: Cohort) -> tuple[Any, RoundRecord]:
        start = time.monotonic()
        sent, received = self.dispatcher.traffic()
        shards = make_shards(cohort.sizes, self.config.num_shards)
        output, timings = run_sharded(self.dispatcher, self.algorithm.train_form, state, cohort.keys, shards)
        latency = time.monotonic() - start
        sent_after, received_after = self.dispatcher.traffic()
        train = train_metrics(output.metrics)
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
            train=train,
        )
        return output.state, record

    def evaluate(self, record: RoundRecord, state: Any, eval_state: Any, cohort: Cohort) -> RoundRecord:
        """Federated evaluation of the new model on the test examples of the round's clients
        and of the held-out clients, which never train."""
        start = time.monotonic()
        eval_state = self.dispatcher.call(self.algorithm.evaluation.set_model_weights,
                                          [eval_state, state.global_model_weights])
        groups = {"round_clients": evaluation_cohort(self.source, cohort.clients), "heldout": self.heldout}
        results = {name: self._evaluate_on(eval_state, group)
                   for name, group in groups.items() if len(group.clients)}
        return dataclasses.replace(record, eval=results, eval_latency_s=time.monotonic() - start)

    def _evaluate_on(self, eval_state: Any, cohort: Cohort) -> dict[str, float]:
        shards = make_shards(cohort.sizes, self.config.num_shards)
        output, _ = run_sharded(self.dispatcher, self.algorithm.eval_form, eval_state, cohort.keys, shards)
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
