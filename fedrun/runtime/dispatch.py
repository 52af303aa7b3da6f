"""Dynamic dispatch of shards to workers: a worker that finishes takes the next shard.

The coordinator, not a static split inside TFF, decides who runs what, and times every shard.
Results come back in argument order whatever order workers finish in. A shard is a pure function
of its arguments, so a shard lost with its worker is simply run again elsewhere: the result is
identical to a run without the fault. For the same reason a slow shard may be speculated on, as
MapReduce's backup tasks and Spark's `spark.speculation` do: once no shard waits, an idle worker
runs a copy of the oldest shard that has run longer than a threshold times the median finished
shard; the first result is taken and the other call cancelled (the model cannot change). A
cancelled worker keeps its place in the pool. Everything a call of `map` saw (timings, failures,
copies, traffic) comes back in its outcome.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cluster import WorkerBackend, WorkerError
from fedrun.errors import FedrunError
from fedrun.runtime.session import Session, WorkerCallError

_LOG = logging.getLogger(__name__)
POLL_S = 0.5  # how often running shards' workers are checked for being alive
MAX_SHARD_ATTEMPTS = 3
CANCEL_GRACE_S = 10.0  # a cancelled call ends at its current RPC; a worker that keeps it longer is lost


@dataclass(frozen=True)
class ShardTiming:
    shard: int
    worker: str
    start: float  # seconds on the dispatcher's clock
    end: float
    backup: bool = False  # the result came from a speculative copy


@dataclass(frozen=True)
class LostCopy:
    """An attempt at a shard whose rival delivered first: its result was dropped or its call cancelled."""

    shard: int
    worker: str
    start: float
    end: float  # when its call ended (or was given up on)
    backup: bool  # the speculative copy lost; False: the original did


@dataclass(frozen=True)
class WorkerFailure:
    worker: str
    shard: int
    error: str
    replaced: bool  # a fresh worker took the slot


@dataclass(frozen=True)
class Traffic:
    """Serialized gRPC bytes to and from workers."""

    sent: int = 0
    received: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.sent + other.sent, self.received + other.received)


@dataclass(frozen=True)
class MapOutcome:
    results: list[Any]  # in argument order
    timings: list[ShardTiming]  # of the attempts that succeeded, by argument index
    failures: list[WorkerFailure] = field(default_factory=list)
    traffic: Traffic = Traffic()
    lost_copies: list[LostCopy] = field(default_factory=list)  # by shard
    backups: int = 0  # speculative copies started (at most one per shard)


class NoWorkersLeft(FedrunError):
    pass


class Dispatcher:
    """Runs computations on a pool of worker sessions, re-running work lost with a worker.

    `replace(worker_id)` returns a session to a fresh worker in that slot, or raises WorkerError
    if the backend cannot provide one; without it a failed worker's slot is simply dropped.
    `can_recycle`: whether `replace` starts a new process, which `recycle` needs.
    `should_stop` is called while calls run, at least every POLL_S: it raises to stop waiting
    (a stop request; the calls still running are abandoned to their sessions' deadlines).
    `speculation`: the threshold (times the median finished shard) past which a running shard
    gets a copy on an idle worker; None: never.
    """

    def __init__(
        self,
        sessions: Sequence[Session],
        is_alive: Callable[[str], bool],
        replace: Callable[[str], Session] | None = None,
        can_recycle: bool = False,
        clock: Callable[[], float] = time.monotonic,
        should_stop: Callable[[], None] = lambda: None,
        speculation: float | None = None,
    ):
        self._sessions = list(sessions)
        self._is_alive = is_alive
        self._replace = replace
        self._can_recycle = can_recycle
        self._clock = clock
        self._should_stop = should_stop
        self._speculation = speculation

    @classmethod
    def for_backend(
        cls,
        backend: WorkerBackend,
        session: Callable[[Any], Session],
        should_stop: Callable[[], None] = lambda: None,
        speculation: float | None = None,
    ) -> Dispatcher:
        """Over the backend's started workers (`session(worker)` connects to one); a failed or
        recycled worker's slot is refilled by the backend."""
        return cls(
            [session(w) for w in backend.workers()],
            backend.is_alive,
            lambda worker_id: session(backend.replace(worker_id)),
            can_recycle=backend.capabilities.starts_workers,
            should_stop=should_stop,
            speculation=speculation,
        )

    def close(self, wait: bool = True) -> None:
        """Closes the sessions to the current workers (the backend stops the workers)."""
        for session in self._sessions:
            session.close(wait=wait)

    @property
    def workers(self) -> list[str]:
        return [s.worker.worker_id for s in self._sessions]

    def recycle(self) -> list[str]:
        """Replaces every worker with a fresh one, between rounds; returns the slots refilled.

        Work is a pure function of its arguments, so results do not change; a slot that cannot
        be refilled is dropped. Workers run by someone else (a backend that only reconnects) are
        left as they are.
        """
        if self._replace is None or not self._can_recycle:
            return []
        recycled = []
        for session in list(self._sessions):
            worker_id = session.worker.worker_id
            self._sessions.remove(session)
            session.close(wait=False)
            replacement = self._replacement(worker_id)
            if replacement is not None:
                self._sessions.append(replacement)
                recycled.append(worker_id)
        return recycled

    def call(self, comp: Any, arg: Any = None) -> Any:
        """One whole computation on one worker (small server-side steps); its value."""
        return self.map(comp, [arg]).results[0]

    def map(
        self, comp: Any, args: Sequence[Any], preferred: Sequence[str | None] | None = None
    ) -> MapOutcome:
        """`comp(arg)` for every arg, each on the next idle worker; `preferred[i]` names the
        worker that should run arg i (while that worker is in the pool)."""
        return _MapCall(self, comp, args, preferred).run()

    def _drop(self, session: Session) -> Session | None:
        """Takes a failed worker out of the pool, refilling its slot if the backend can."""
        self._sessions.remove(session)
        session.close(wait=False)
        replacement = self._replacement(session.worker.worker_id)
        if replacement is not None:
            self._sessions.append(replacement)
        return replacement

    def _replacement(self, worker_id: str) -> Session | None:
        if self._replace is None:
            return None
        try:
            return self._replace(worker_id)
        except WorkerError as error:  # the backend could not restart it: carry on without the slot
            _LOG.warning("could not replace worker %s: %s", worker_id, error)
            return None


@dataclass
class _Attempt:
    index: int
    session: Session
    start: float
    backup: bool  # a speculative copy of a shard that was already running
    cancelled_at: float | None = None  # when another attempt's result made this one moot


class _MapCall:
    """The state of one `Dispatcher.map`: which shards wait, run, are done, on which sessions."""

    def __init__(
        self, dispatcher: Dispatcher, comp: Any, args: Sequence[Any], preferred: Sequence[str | None] | None
    ):
        self._d = dispatcher
        self._comp, self._args = comp, args
        self._preferred = list(preferred) if preferred is not None else [None] * len(args)
        self._idle = collections.deque(dispatcher._sessions)
        self._pending = collections.deque(range(len(args)))
        self._running: dict[concurrent.futures.Future, _Attempt] = {}
        self._results: list[Any] = [None] * len(args)
        self._done: set[int] = set()
        self._failed: collections.Counter[int] = collections.Counter()
        self._finished_s: list[float] = []  # durations of the attempts that produced results
        self._timings: list[ShardTiming] = []
        self._losers: list[LostCopy] = []
        self._copied: set[int] = set()  # shards that got their one speculative copy
        self._failures: list[WorkerFailure] = []
        self._traffic = Traffic()

    def run(self) -> MapOutcome:
        try:
            while self._pending or self._running:
                self._assign()
                next_check = self._speculate()
                if not self._running:
                    raise NoWorkersLeft(
                        f"no worker is left to run shard {self._pending[0]}: every worker failed and "
                        f"none could be replaced. Completed rounds are kept in the output directory; "
                        f"check the worker logs, then resume with --resume."
                    )
                timeout = (
                    POLL_S if next_check is None else min(POLL_S, max(0.0, next_check - self._d._clock()))
                )
                done, _ = concurrent.futures.wait(
                    self._running, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
                )
                self._d._should_stop()
                for future in done:
                    self._finished(future)
                self._check_running()
        finally:
            for future, attempt in self._running.items():
                future.cancel()
                attempt.session.cancel()
        return MapOutcome(
            self._results,
            sorted(self._timings, key=lambda t: t.shard),
            self._failures,
            self._traffic,
            sorted(self._losers, key=lambda c: (c.shard, c.start)),
            len(self._copied),
        )

    def _start(self, index: int, session: Session, backup: bool) -> None:
        self._idle.remove(session)
        self._running[session.submit(self._comp, self._args[index])] = _Attempt(
            index, session, self._d._clock(), backup
        )

    def _assign(self) -> None:
        """Each idle worker takes the first waiting shard meant for it, or meant for no worker
        in the pool."""
        pool = {s.worker.worker_id for s in self._d._sessions}
        for session in list(self._idle):
            mine = [i for i in self._pending if self._preferred[i] == session.worker.worker_id]
            free = [i for i in self._pending if self._preferred[i] not in pool]
            index = next(iter(mine or free), None)
            if index is not None:
                self._pending.remove(index)
                self._start(index, session, backup=False)

    def _speculate(self) -> float | None:
        """Once no shard waits, an idle worker runs a copy of the oldest shard running longer
        than the threshold times the median finished shard (one copy per shard at most, as
        MapReduce's backup tasks); returns when to look again."""
        threshold = self._d._speculation
        if threshold is None or self._pending or not self._finished_s:
            return None
        limit = threshold * float(np.median(self._finished_s))
        candidates = sorted(
            (a for a in self._running.values() if a.index not in self._copied | self._done),
            key=lambda a: a.start,
        )
        now = self._d._clock()
        for attempt in candidates:
            if now - attempt.start < limit:
                return attempt.start + limit if self._idle else None
            if not self._idle:
                return None
            self._copied.add(attempt.index)
            _LOG.info(
                "shard %d has run %.2f s on %s (median shard %.2f s): a copy starts on %s",
                attempt.index,
                now - attempt.start,
                attempt.session.worker.worker_id,
                limit / threshold,
                self._idle[0].worker.worker_id,
            )
            self._start(attempt.index, self._idle[0], backup=True)
        return None

    def _finished(self, future: concurrent.futures.Future) -> None:
        attempt = self._running.pop(future)
        try:
            call = future.result()
        except WorkerCallError as error:
            if attempt.cancelled_at is not None or attempt.index in self._done:
                self._lost_copy(attempt)
                if not self._d._is_alive(attempt.session.worker.worker_id):
                    self._failed_worker(attempt, error)
                else:
                    self._idle.append(attempt.session)
            else:
                self._failed_worker(attempt, error)
            return
        self._traffic += Traffic(call.bytes_sent, call.bytes_received)
        if attempt.index in self._done:  # its rival won while this one was finishing
            self._lost_copy(attempt)
            self._idle.append(attempt.session)
            return
        now = self._d._clock()
        self._results[attempt.index] = call.value
        self._done.add(attempt.index)
        self._finished_s.append(now - attempt.start)
        self._timings.append(
            ShardTiming(attempt.index, attempt.session.worker.worker_id, attempt.start, now, attempt.backup)
        )
        self._idle.append(attempt.session)
        for rival in self._running.values():
            if rival.index == attempt.index and rival.cancelled_at is None:
                rival.cancelled_at = now
                rival.session.cancel()

    def _check_running(self) -> None:
        """A running attempt whose worker died, or whose cancelled call does not end, is lost."""
        now = self._d._clock()
        for future, attempt in list(self._running.items()):
            worker = attempt.session.worker
            if not self._d._is_alive(worker.worker_id):
                error = WorkerCallError(
                    worker,
                    "a running shard",
                    None,
                    "the worker is gone: its process exited or it stopped answering",
                )
            elif attempt.cancelled_at is not None and now - attempt.cancelled_at > CANCEL_GRACE_S:
                error = WorkerCallError(
                    worker, "a cancelled copy", None, f"its call did not end within {CANCEL_GRACE_S:g} s"
                )
            else:
                continue
            del self._running[future]
            if attempt.cancelled_at is not None or attempt.index in self._done:
                self._lost_copy(attempt)
            self._failed_worker(attempt, error)

    def _lost_copy(self, attempt: _Attempt) -> None:
        self._losers.append(
            LostCopy(
                attempt.index,
                attempt.session.worker.worker_id,
                attempt.start,
                self._d._clock(),
                attempt.backup,
            )
        )

    def _failed_worker(self, attempt: _Attempt, error: WorkerCallError) -> None:
        """The worker is dropped (and its slot refilled if possible); its shard runs again unless
        it is done or another copy of it still runs."""
        index, session = attempt.index, attempt.session
        still_running = any(a.index == index for a in self._running.values())
        again = index not in self._done and not still_running
        _LOG.warning("%s%s", error, f"; running shard {index} again" if again else "")
        if session in self._idle:
            self._idle.remove(session)
        replacement = self._d._drop(session)
        if replacement is not None:
            self._idle.append(replacement)
        self._failures.append(
            WorkerFailure(session.worker.worker_id, index, str(error), replacement is not None)
        )
        if again:
            self._failed[index] += 1
            if self._failed[index] >= MAX_SHARD_ATTEMPTS:
                raise FedrunError(
                    f"shard {index} failed on {self._failed[index]} workers, last: {error}"
                ) from None
            self._pending.appendleft(index)
