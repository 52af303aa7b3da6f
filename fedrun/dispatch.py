"""Dynamic dispatch of shards to workers: a worker that finishes takes the next shard.

The coordinator, not a static split inside TFF, decides who runs what, and times every shard.
Results come back in argument order whatever order workers finish in. A shard is a pure function
of its arguments, so a shard lost with its worker is simply run again elsewhere: the result is
identical to a run without the fault.
"""

import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow_federated as tff

from cluster import WorkerBackend
from fedrun.errors import FedrunError
from fedrun.worker_session import WorkerCallError, WorkerSession

_LOG = logging.getLogger(__name__)
_POLL_S = 0.5
MAX_SHARD_ATTEMPTS = 3


@dataclass(frozen=True)
class ShardTiming:
    shard: int
    worker: str
    start: float  # seconds on the coordinator's clock
    end: float


@dataclass(frozen=True)
class WorkerFailure:
    worker: str
    shard: int
    error: str
    replaced: bool  # a fresh worker took the slot


class NoWorkersLeft(FedrunError):
    pass


class Dispatcher:
    """Runs computations on a pool of worker sessions, re-running work lost with a worker.

    `replace(worker_id)` returns a session to a fresh worker in that slot, or raises if the
    backend cannot provide one; without it a failed worker's slot is simply dropped.
    `restarts_workers`: whether `replace` starts a new process, which `recycle` needs.
    """

    def __init__(self, sessions: Sequence[WorkerSession], is_alive: Callable[[str], bool],
                 replace: Callable[[str], WorkerSession] | None = None, restarts_workers: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self._sessions = list(sessions)
        self._is_alive = is_alive
        self._replace = replace
        self._restarts_workers = restarts_workers
        self._clock = clock
        self._failures: list[WorkerFailure] = []
        self._recycled: list[str] = []

    @classmethod
    def for_backend(cls, backend: WorkerBackend, rpc_timeout_s: float) -> "Dispatcher":
        """Over the backend's started workers; a failed or recycled worker's slot is refilled by it."""
        return cls([WorkerSession(w, rpc_timeout_s) for w in backend.workers()], backend.is_alive,
                   lambda worker_id: WorkerSession(backend.replace(worker_id), rpc_timeout_s),
                   restarts_workers=backend.starts_workers)

    def close(self, wait: bool = True) -> None:
        """Closes the sessions to the current workers (the backend stops the workers)."""
        for session in self._sessions:
            session.close(wait=wait)

    @property
    def workers(self) -> list[str]:
        return [s.worker.worker_id for s in self._sessions]

    def traffic(self) -> tuple[int, int]:
        """Bytes sent to and received from the current workers so far."""
        sent, received = zip(*(s.traffic for s in self._sessions)) if self._sessions else ((0,), (0,))
        return sum(sent), sum(received)

    def take_failures(self) -> list[WorkerFailure]:
        """Failures since the last call, for the round's record."""
        failures, self._failures = self._failures, []
        return failures

    def take_recycled(self) -> list[str]:
        """Workers recycled since the last call, for the round's record."""
        recycled, self._recycled = self._recycled, []
        return recycled

    def recycle(self) -> None:
        """Replaces every worker with a fresh one, between rounds. Work is a pure function of its
        arguments, so results do not change; a slot that cannot be refilled is dropped. Workers
        run by someone else (a backend that only reconnects) are left as they are."""
        if self._replace is None or not self._restarts_workers:
            return
        for session in list(self._sessions):
            worker_id = session.worker.worker_id
            self._sessions.remove(session)
            session.close(wait=False)
            replacement = self._replacement(worker_id)
            if replacement is not None:
                self._sessions.append(replacement)
                self._recycled.append(worker_id)

    def call(self, comp: tff.Computation, arg: Any = None) -> Any:
        """One whole computation on one worker (small server-side steps)."""
        return self.map(comp, [arg])[0][0]

    def map(self, comp: tff.Computation, args: Sequence[Any]) -> tuple[list[Any], list[ShardTiming]]:
        """`comp(arg)` for every arg, each on the next idle worker; results in argument order."""
        idle = collections.deque(self._sessions)
        pending = collections.deque(range(len(args)))
        attempts = collections.Counter()
        running: dict[concurrent.futures.Future, tuple[int, WorkerSession, float]] = {}
        results: list[Any] = [None] * len(args)
        timings: list[ShardTiming] = []
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
                        f"check the worker logs, then resume with --resume.")
                done, _ = concurrent.futures.wait(
                    running, timeout=_POLL_S, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    index, session, start = running.pop(future)
                    try:
                        results[index] = future.result()
                    except WorkerCallError as error:
                        self._retry_or_raise(index, session, error, attempts, pending, idle)
                        continue
                    timings.append(ShardTiming(index, session.worker.worker_id, start, self._clock()))
                    idle.append(session)
                for future, (index, session, _) in list(running.items()):
                    if not self._is_alive(session.worker.worker_id):
                        del running[future]
                        error = WorkerCallError(session.worker, "a running shard", None, "the worker process exited")
                        self._retry_or_raise(index, session, error, attempts, pending, idle)
        finally:
            for future in running:
                future.cancel()
        return results, sorted(timings, key=lambda t: t.shard)

    def _retry_or_raise(self, index, session, error, attempts, pending, idle) -> None:
        """Drop the failed worker (replacing it if possible) and queue its shard again."""
        _LOG.warning("%s; running shard %d again", error, index)
        self._sessions.remove(session)
        session.close(wait=False)
        replacement = self._replacement(session.worker.worker_id)
        self._failures.append(WorkerFailure(session.worker.worker_id, index, str(error), replacement is not None))
        if replacement is not None:
            self._sessions.append(replacement)
            idle.append(replacement)
        if attempts[index] >= MAX_SHARD_ATTEMPTS:
            raise FedrunError(f"shard {index} failed on {attempts[index]} workers, last: {error}") from None
        pending.appendleft(index)

    def _replacement(self, worker_id: str) -> WorkerSession | None:
        if self._replace is None:
            return None
        try:
            return self._replace(worker_id)
        except Exception as error:  # the backend could not restart it: carry on without the slot
            _LOG.warning("could not replace worker %s: %s", worker_id, error)
            return None
