"""Dynamic dispatch of shards to workers: a worker that finishes takes the next shard.

The coordinator, not a static split inside TFF, decides who runs what, and times every shard.
Results come back in shard order whatever order workers finish in.
"""

import collections
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow_federated as tff

from fedrun.worker_session import WorkerCallError, WorkerSession

_POLL_S = 0.5


@dataclass(frozen=True)
class ShardTiming:
    shard: int
    worker: str
    start: float  # seconds on the coordinator's clock
    end: float


class WorkerDied(WorkerCallError):
    pass


class Dispatcher:
    """Runs computations on a pool of worker sessions."""

    def __init__(self, sessions: Sequence[WorkerSession], is_alive: Callable[[str], bool],
                 clock: Callable[[], float] = time.monotonic):
        self._sessions = list(sessions)
        self._is_alive = is_alive
        self._clock = clock

    @property
    def workers(self) -> list[str]:
        return [s.worker.worker_id for s in self._sessions]

    def traffic(self) -> tuple[int, int]:
        """Bytes sent to and received from all workers so far."""
        sent, received = zip(*(s.traffic for s in self._sessions))
        return sum(sent), sum(received)

    def call(self, comp: tff.Computation, arg: Any = None) -> Any:
        """One whole computation on the first worker (small server-side steps)."""
        return self.map(comp, [arg])[0][0]

    def map(self, comp: tff.Computation, args: Sequence[Any]) -> tuple[list[Any], list[ShardTiming]]:
        """`comp(arg)` for every arg, each on the next idle worker; results in argument order."""
        idle = collections.deque(self._sessions)
        pending = collections.deque(range(len(args)))
        running: dict[concurrent.futures.Future, tuple[int, WorkerSession, float]] = {}
        results: list[Any] = [None] * len(args)
        timings: list[ShardTiming] = []
        try:
            while pending or running:
                while pending and idle:
                    index, session = pending.popleft(), idle.popleft()
                    running[session.submit(comp, args[index])] = (index, session, self._clock())
                done, _ = concurrent.futures.wait(
                    running, timeout=_POLL_S, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    index, session, start = running.pop(future)
                    results[index] = future.result()  # raises WorkerCallError on failure
                    timings.append(ShardTiming(index, session.worker.worker_id, start, self._clock()))
                    idle.append(session)
                self._check_alive(session for _, session, _ in running.values())
        finally:
            for future in running:
                future.cancel()
        return results, sorted(timings, key=lambda t: t.shard)

    def _check_alive(self, sessions) -> None:
        """A worker that died mid-call is reported now, not when its RPC deadline passes."""
        for session in sessions:
            if not self._is_alive(session.worker.worker_id):
                raise WorkerDied(session.worker, "a running shard", None, "the worker process exited")
