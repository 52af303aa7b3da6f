"""A coordinator-side connection to one TFF executor-service worker, driven from a thread of its
own so workers run concurrently (TFF's `RemoteExecutor` blocks its event loop in gRPC calls)."""

import asyncio
import concurrent.futures
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import tensorflow_federated as tff

from cluster import Worker
from fedrun.runtime.remote import BoundedStub, ExecutorPool, WorkerCallError, compile_for_workers

_MAX_MESSAGE_BYTES = 2_000_000_000
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
]

__all__ = ["CallResult", "Session", "WorkerCallError", "WorkerSession"]


@dataclass(frozen=True)
class CallResult:
    """What one computation returned on a worker, and the serialized bytes its call moved."""

    value: Any
    bytes_sent: int
    bytes_received: int


class Session(Protocol):
    """What the dispatcher needs of a worker connection (a real one, or runtime.fake's)."""

    worker: Worker

    def submit(self, comp: tff.Computation, arg: Any = None) -> concurrent.futures.Future[CallResult]: ...

    def cancel(self) -> None:
        """Makes the call in flight end soon with a WorkerCallError; the session stays usable."""

    def close(self, wait: bool = True) -> None: ...


class WorkerSession:
    """One worker's TFF execution context, driven from a thread of its own."""

    def __init__(self, worker: Worker, rpc_timeout_s: float):
        self.worker = worker
        self._channel = grpc.insecure_channel(worker.target, _CHANNEL_OPTIONS)
        stub = self._stub = BoundedStub(worker, self._channel, rpc_timeout_s)

        self._context = tff.framework.AsyncExecutionContext(
            ExecutorPool(stub),
            compiler_fn=compile_for_workers,
            transform_args=tff.tensorflow.transform_args,
            transform_result=tff.tensorflow.transform_result,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"session-{worker.worker_id}", daemon=True
        )
        self._thread.start()

    def submit(self, comp: tff.Computation, arg: Any = None) -> concurrent.futures.Future[CallResult]:
        """Starts `comp(arg)` on this worker; the future holds the result in Python form."""
        self._stub.resume()  # the previous call has ended: a cancel of it must not reach this one
        return asyncio.run_coroutine_threadsafe(self._invoke(comp, arg), self._loop)

    def cancel(self) -> None:
        """Ends the call in flight at its current RPC (the worker finishes that work unobserved)."""
        self._stub.cancel()

    async def _invoke(self, comp: tff.Computation, arg: Any) -> CallResult:
        # The dispatcher runs one call at a time per session, so the stub's counters move for
        # this call alone (and for TFF's occasional disposals of earlier values).
        sent, received = self._stub.bytes_sent, self._stub.bytes_received
        value = await self._context.invoke(comp, arg)
        return CallResult(value, self._stub.bytes_sent - sent, self._stub.bytes_received - received)

    def close(self, wait: bool = True) -> None:
        """Stops the session's thread; `wait=False` abandons a call stuck on a dead worker
        (its RPC deadline ends it later)."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        if wait:
            self._thread.join(timeout=5)
        self._stub.closed = True
        self._channel.close()
