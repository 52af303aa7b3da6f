"""The execute step of a round: train a cohort on the workers, or evaluate a model on groups of
clients, and return everything that happened as one outcome object."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tree

from cluster import Slowdown, WorkerBackend
from fedrun.learning.algorithm import FederatedAlgorithm, eval_metrics, named_metrics, train_metrics
from fedrun.learning.client_time import partial_client_time
from fedrun.runtime.dispatch import Dispatcher, LostCopy, ShardTiming, Traffic, WorkerFailure
from fedrun.runtime.session import WorkerSession
from fedrun.runtime.sharded import ShardedResult, run_sharded, run_sharded_clients
from fedrun.runtime.speeds import WorkerSpeeds
from fedrun.selection.cohort import Cohort
from fedrun.selection.sharding import SHARD_SIZINGS, Shard, make_shards


@dataclass(frozen=True)
class ShardRun:
    shard: Shard  # which of the cohort's clients it trained
    timing: ShardTiming
    client_time: dict[str, Any] | None = None  # its clients' measured training times (histogram, ...)


@dataclass(frozen=True)
class TrainingGroup:
    """Clients of a buffered-async update that trained from one server version."""

    positions: tuple[int, ...]  # in the update's cohort
    weights: Any  # that version's model weights
    staleness_weight: float


@dataclass(frozen=True)
class TrainOutcome:
    state: Any  # the new server state
    # The clients' training metrics: loss, accuracy, num_examples; {} if none trained.
    metrics: dict[str, float]
    shards: list[ShardRun]  # in shard order
    failures: list[WorkerFailure]  # workers lost during the round; their shards ran again
    traffic: Traffic
    recycled: list[str]  # workers made fresh before the round
    workers: int  # workers in the pool at the end
    start: float  # time.monotonic()
    end: float
    lost_copies: list[LostCopy] = field(default_factory=list)  # speculation's losers
    backups: int = 0  # speculative copies started
    slowed: dict[str, Slowdown] = field(default_factory=dict)  # workers slowed on purpose
    # With speed-sized shards: each worker's measured seconds per unit of work, after the round.
    speeds: dict[str, float] | None = None

    @property
    def wall_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class EvalOutcome:
    metrics: dict[str, dict[str, float]]  # by group: loss, accuracy, num_examples
    wall_s: float


class RoundRuntime:
    """Runs an algorithm's rounds over a dispatcher's workers.

    `sizing` "equal" cuts a round into `num_shards` shards of equal work that idle workers take in
    turn; "speed" cuts one shard per worker, sized by each worker's measured speed and meant for
    that worker (WorkerSpeeds). `slowdowns` tells which workers are slowed on purpose, for records.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        algorithm: FederatedAlgorithm,
        num_shards: int,
        recycle_every: int = 0,
        sizing: str = "equal",
        slowdowns: Callable[[], dict[str, Slowdown]] = dict,
    ):
        if sizing not in SHARD_SIZINGS:
            raise ValueError(f"sizing must be one of {', '.join(SHARD_SIZINGS)}; got {sizing!r}")
        self.dispatcher = dispatcher
        self.algorithm = algorithm
        self._num_shards = num_shards
        self._recycle_every = recycle_every
        self._speeds = WorkerSpeeds() if sizing == "speed" else None
        self._slowdowns = slowdowns
        self._eval_initial: Any = None  # evaluation's initial state; each evaluation starts from it

    @classmethod
    def over(
        cls,
        backend: WorkerBackend,
        algorithm: FederatedAlgorithm,
        num_shards: int,
        rpc_timeout_s: float,
        recycle_every: int = 0,
        should_stop: Callable[[], None] = lambda: None,
        speculation: float | None = None,
        sizing: str = "equal",
    ) -> RoundRuntime:
        """Over a started backend's workers, each dialled with `rpc_timeout_s` on every call;
        `should_stop` raises to stop waiting on the workers, `speculation` is the threshold for
        speculative copies (see Dispatcher)."""
        dispatcher = Dispatcher.for_backend(
            backend, lambda worker: WorkerSession(worker, rpc_timeout_s), should_stop, speculation
        )
        return cls(dispatcher, algorithm, num_shards, recycle_every, sizing, backend.slowdowns)

    def close(self) -> None:
        """Closes the connections; calls stuck on a dead worker are abandoned to their deadline."""
        self.dispatcher.close(wait=False)

    def initial_state(self) -> Any:
        return self.dispatcher.call(self.algorithm.training.initialize)

    def train(self, round_num: int, state: Any, cohort: Cohort) -> TrainOutcome:
        """One round of training over the cohort's clients, from `state`."""
        recycled = self._recycle_if_due(round_num)
        start = time.monotonic()
        if not len(cohort.clients):  # an abandoned round: the model stays as it is
            return TrainOutcome(
                state,
                {},
                [],
                [],
                Traffic(),
                recycled,
                len(self.dispatcher.workers),
                start,
                start,
                slowed=self._slowdowns(),
            )
        preferred = None
        if self._speeds is None:
            shards = make_shards(cohort.sizes, self._num_shards)
        else:
            workers = self.dispatcher.workers
            shards = make_shards(cohort.sizes, len(workers), self._speeds.shares(workers))
            preferred = workers[: len(shards)]
        result = run_sharded(
            self.dispatcher,
            self.algorithm.train_form,
            state,
            self.algorithm.train_data(cohort.keys),
            shards,
            preferred,
        )
        if self._speeds is not None:
            self._speeds.update(shards, result.timings, cohort.sizes)
        return self._outcome(
            result, shards, result.value.state, train_metrics(result.value.metrics), recycled, start
        )

    def train_buffered(
        self, round_num: int, state: Any, cohort: Cohort, groups: Sequence[TrainingGroup]
    ) -> TrainOutcome:
        """One buffered-async server update from `state`: each group of the cohort's clients
        trains from its own start weights, its results scaled by its staleness weight; the
        versions travel stacked, so shards are cut by cost alone; every shard's sum folds into
        one, and the server step applies it (learning.buffered)."""
        recycled = self._recycle_if_due(round_num)
        start = time.monotonic()
        parts = self.algorithm.buffered
        server_arg = collections.OrderedDict(
            weights=tree.map_structure(lambda *versions: np.stack(versions), *[g.weights for g in groups]),
            staleness_weights=np.array([g.staleness_weight for g in groups], np.float32),
        )
        index = np.zeros(len(cohort.clients), np.int32)
        for slot, group in enumerate(groups):
            index[list(group.positions)] = slot
        shards = make_shards(cohort.sizes, self._num_shards)
        result = run_sharded_clients(
            self.dispatcher,
            parts.client_form,
            server_arg,
            [list(index), self.algorithm.train_data(cohort.keys)],
            shards,
        )
        total, examples, measurements = result.value
        step = self.dispatcher.map(
            parts.server_step, [[state.finalizer, state.global_model_weights, total, examples]]
        )
        finalizer, weights = step.results[0]
        new_state = state._replace(global_model_weights=weights, finalizer=finalizer)
        result = dataclasses.replace(
            result, failures=result.failures + step.failures, traffic=result.traffic + step.traffic
        )
        return self._outcome(result, shards, new_state, named_metrics(measurements["train"]), recycled, start)

    def _outcome(
        self,
        result: ShardedResult,
        shards: list[Shard],
        state: Any,
        metrics: dict[str, float],
        recycled: list[str],
        start: float,
    ) -> TrainOutcome:
        return TrainOutcome(
            state=state,
            metrics=metrics,
            shards=[
                ShardRun(shards[t.shard], t, partial_client_time(result.partials[t.shard]))
                for t in result.timings
            ],
            failures=result.failures,
            traffic=result.traffic,
            recycled=recycled,
            workers=len(self.dispatcher.workers),
            start=start,
            end=time.monotonic(),
            lost_copies=result.lost_copies,
            backups=result.backups,
            slowed=self._slowdowns(),
            speeds=self._speeds.as_dict() if self._speeds is not None else None,
        )

    def evaluate(self, state: Any, groups: Mapping[str, Cohort]) -> EvalOutcome:
        """Federated evaluation of `state`'s model on each group's test examples."""
        start = time.monotonic()
        evaluation = self.algorithm.evaluation
        if self._eval_initial is None:
            self._eval_initial = self.dispatcher.call(evaluation.initialize)
        eval_state = self.dispatcher.call(
            evaluation.set_model_weights, [self._eval_initial, state.global_model_weights]
        )
        metrics = {}
        for name, group in groups.items():
            if len(group.clients):
                result = run_sharded(
                    self.dispatcher,
                    self.algorithm.eval_form,
                    eval_state,
                    self.algorithm.eval_data(group.keys),
                    make_shards(group.sizes, self._num_shards),
                )
                metrics[name] = eval_metrics(result.value.metrics)
        return EvalOutcome(metrics, time.monotonic() - start)

    def _recycle_if_due(self, round_num: int) -> list[str]:
        """Fresh workers before every `recycle_every`-th round after the first."""
        every = self._recycle_every
        if every and round_num > 1 and (round_num - 1) % every == 0:
            return self.dispatcher.recycle()
        return []
