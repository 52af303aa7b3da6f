"""Dynamic dispatch of shards to workers: a worker that finishes takes the next shard.

The coordinator, not a static split inside TFF, decides who runs what, and times every shard.
Results come back in argument order whatever order workers finish in. A shard is a pure function
of its arguments, so a shard lost with its worker is simply run again elsewhere: the result is
identical to a run without the fault. Everything a call of `map` saw (timings, failures,
traffic) comes back in its outcome.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster import WorkerBackend, WorkerError
from fedrun.errors import FedrunError
from fedrun.runtime.session import Session, WorkerCallError

_LOG = logging.getLogger(__name__)
POLL_S = 0.5  # how often running shards' workers are checked for being alive
MAX_SHARD_ATTEMPTS = 3


@dataclass(frozen=True)
class ShardTiming:
    shard: int
    worker: str
    start: float  # seconds on the dispatcher's clock
    end: float


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


class NoWorkersLeft(FedrunError):
    pass


class Dispatcher:
    """Runs computations on a pool of worker sessions, re-running work lost with a worker.

    `replace(worker_id)` returns a session to a fresh worker in that slot, or raises WorkerError
    if the backend cannot provide one; without it a failed worker's slot is simply dropped.
    `can_recycle`: whether `replace` starts a new process, which `recycle` needs.
    `should_stop` is called while calls run, at least every POLL_S: it raises to stop waiting
    (a stop request; the calls still running are abandoned to their sessions' deadlines).
    """

    def __init__(
        self,
        sessions: Sequence[Session],
        is_alive: Callable[[str], bool],
        replace: Callable[[str], Session] | None = None,
        can_recycle: bool = False,
        clock: Callable[[], float] = time.monotonic,
        should_stop: Callable[[], None] = lambda: None,
    ):
        self._sessions = list(sessions)
        self._is_alive = is_alive
        self._replace = replace
        self._can_recycle = can_recycle
        self._clock = clock
        self._should_stop = should_stop

    @classmethod
    def for_backend(
        cls,
        backend: WorkerBackend,
        session: Callable[[Any], Session],
        should_stop: Callable[[], None] = lambda: None,
    ) -> Dispatcher:
        """Over the backend's started workers (`session(worker)` connects to one); a failed or
        recycled worker's slot is refilled by the backend."""
        return cls(
            [session(w) for w in backend.workers()],
            backend.is_alive,
            lambda worker_id: session(backend.replace(worker_id)),
            can_recycle=backend.capabilities.starts_workers,
            should_stop=should_stop,
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

    def map(self, comp: Any, args: Sequence[Any]) -> MapOutcome:
        """`comp(arg)` for every arg, each on the next idle worker."""
        idle = collections.deque(self._sessions)
        pending = collections.deque(range(len(args)))
        attempts: collections.Counter[int] = collections.Counter()
        running: dict[concurrent.futures.Future, tuple[int, Session, float]] = {}
        results: list[Any] = [None] * len(args)
        timings: list[ShardTiming] = []
        failures: list[WorkerFailure] = []
        traffic = Traffic()

        def lost(index: int, session: Session, error: WorkerCallError) -> None:
            failures.append(self._drop(index, session, error, attempts, pending, idle))

        try:
            while pending or running:
                while pending and idle:
                    index, session = pending.popleft(), idle.popleft()
                    attempts[index] += 1
                    running[session.submit(comp, args[index])] = (index, session, self._clock())
                if not running:
                    raise NoWorkersLeft(
                        f"no worker is left to run shard {pending[0]}: every worker failed and none "
                        f"could be replaced. Completed rounds are kept in the output directory; "
                        f"check the worker logs, then resume with --resume."
                    )
                done, _ = concurrent.futures.wait(
                    running, timeout=POLL_S, return_when=concurrent.futures.FIRST_COMPLETED
                )
                self._should_stop()
                for future in done:
                    index, session, start = running.pop(future)
                    try:
                        call = future.result()
                    except WorkerCallError as error:
                        lost(index, session, error)
                        continue
                    results[index] = call.value
                    traffic += Traffic(call.bytes_sent, call.bytes_received)
                    timings.append(ShardTiming(index, session.worker.worker_id, start, self._clock()))
                    idle.append(session)
                for future, (index, session, _) in list(running.items()):
                    if not self._is_alive(session.worker.worker_id):
                        del running[future]
                        lost(
                            index,
                            session,
                            WorkerCallError(
                                session.worker, "a running shard", None, "the worker process exited"
                            ),
                        )
        finally:
            for future in running:
                future.cancel()
        return MapOutcome(results, sorted(timings, key=lambda t: t.shard), failures, traffic)

    def _drop(self, index, session, error, attempts, pending, idle) -> WorkerFailure:
        """Drops the failed worker (replacing it if possible) and queues its shard again."""
        _LOG.warning("%s; running shard %d again", error, index)
        self._sessions.remove(session)
        session.close(wait=False)
        replacement = self._replacement(session.worker.worker_id)
        if replacement is not None:
            self._sessions.append(replacement)
            idle.append(replacement)
        if attempts[index] >= MAX_SHARD_ATTEMPTS:
            raise FedrunError(f"shard {index} failed on {attempts[index]} workers, last: {error}") from None
        pending.appendleft(index)
        return WorkerFailure(session.worker.worker_id, index, str(error), replacement is not None)

    def _replacement(self, worker_id: str) -> Session | None:
        if self._replace is None:
            return None
        try:
            return self._replace(worker_id)
        except WorkerError as error:  # the backend could not restart it: carry on without the slot
            _LOG.warning("could not replace worker %s: %s", worker_id, error)
            return None
