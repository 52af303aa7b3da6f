"""Stand-ins for workers, for tests of the dispatcher's decisions (order, retries, re-dispatch,
replacement) that start no process: httpx's mock transport, for this project's seam.

A `FakeWorkers` pool hands the dispatcher sessions whose calls run a Python function on a thread
of their own, as a real session's calls run on its event-loop thread; a test scripts which calls
fail, hang or take time.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from cluster import Worker, WorkerError
from fedrun.runtime.dispatch import Dispatcher
from fedrun.runtime.remote import CANCELLED
from fedrun.runtime.session import CallResult, WorkerCallError

# A call's work: (worker id, computation, argument) -> its value. Raise FakeFailure to fail it.
Work = Callable[[str, Any, Any], Any]


class FakeFailure(Exception):
    """Raised by a test's work function: the call fails as a dead worker's would."""


class FakeSession:
    """A session whose calls run `work` on a thread of their own."""

    def __init__(self, worker: Worker, pool: FakeWorkers):
        self.worker = worker
        self._pool = pool
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"fake-{worker.worker_id}")
        self.closed = False
        self.cancelled = threading.Event()  # set by cancel(), cleared by the next submit()

    def submit(self, comp: Any, arg: Any = None) -> concurrent.futures.Future[CallResult]:
        self.cancelled.clear()
        return self._thread.submit(self._call, comp, arg)

    def cancel(self) -> None:
        self._pool.cancels.append(self.worker.worker_id)
        self.cancelled.set()

    def close(self, wait: bool = True) -> None:
        self.closed = True
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _call(self, comp: Any, arg: Any) -> CallResult:
        worker_id = self.worker.worker_id
        self._pool.calls.append((worker_id, comp, arg))
        try:
            value = self._pool.work(worker_id, comp, arg)
        except FakeFailure as failure:
            raise WorkerCallError(self.worker, "CreateCall", None, str(failure)) from None
        if self.cancelled.is_set():  # as a real call ends at its next RPC
            raise WorkerCallError(self.worker, "Compute", None, CANCELLED)
        return CallResult(value, bytes_sent=self._pool.bytes_per_call, bytes_received=1)


class FakeWorkers:
    """A pool of fake workers behind a Dispatcher: which are alive, how a slot is refilled."""

    def __init__(self, count: int, work: Work, *, replaceable: bool = True, bytes_per_call: int = 10):
        self.work = work
        self.replaceable = replaceable
        self.bytes_per_call = bytes_per_call
        self.calls: list[tuple[str, Any, Any]] = []  # (worker id, computation, argument), in call order
        self.replaced: list[str] = []
        self.cancels: list[str] = []  # worker ids whose call was cancelled, in order
        self.dead: set[str] = set()
        self.replace_error: Exception | None = None  # what replace() raises instead, if set
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._launches = 0
        self._current: dict[str, FakeSession] = {}
        self.sessions = [self._session(f"fake-{index}") for index in range(count)]

    def hang(self, bound_s: float = 30.0) -> None:
        """For a work function: a call stuck on its worker, as a hung RPC is until its deadline;
        it returns at `close()` (or after `bound_s`), so no thread outlives the test."""
        self._released.wait(bound_s)

    def busy(self, worker_id: str, seconds: float) -> None:
        """For a work function: computing for `seconds`, or until the call is cancelled."""
        self._current[worker_id].cancelled.wait(seconds)

    def close(self) -> None:
        self._released.set()

    def dispatcher(self, can_recycle: bool = True, speculation: float | None = None) -> Dispatcher:
        return Dispatcher(
            self.sessions, self.is_alive, self.replace, can_recycle=can_recycle, speculation=speculation
        )

    def is_alive(self, worker_id: str) -> bool:
        return worker_id not in self.dead

    def replace(self, worker_id: str) -> FakeSession:
        if self.replace_error is not None:
            raise self.replace_error
        if not self.replaceable:
            raise WorkerError(f"cannot replace {worker_id}: this pool does not")
        with self._lock:
            self.replaced.append(worker_id)
            self.dead.discard(worker_id)
        return self._session(worker_id)

    def _session(self, worker_id: str) -> FakeSession:
        with self._lock:
            self._launches += 1
            session = self._current[worker_id] = FakeSession(
                Worker(worker_id, f"fake:{worker_id}#{self._launches}"), self
            )
            return session
