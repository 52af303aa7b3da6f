"""TFF's remote-execution pieces, assembled as `local_cpp_executor_factory` does but without
starting a process, with some of TFF's defaults replaced.

TFF's stub retries an unavailable worker forever: here every RPC has a deadline and fails with
`WorkerCallError`. For speed and memory, computations are compiled once per process (a bounded
cache) and sent once per worker executor, and executors a session no longer keeps are disposed of
on the worker.
"""

import collections
import contextlib
import threading
from typing import Any

import grpc
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import executor_pb2_grpc

from cluster import Worker, WorkerError

# Worker-side executors kept per session (one per shard size seen lately); each holds ~10 MiB
# of TensorFlow sessions on the worker and costs ~80 ms of worker CPU to create.
_MAX_EXECUTORS = 10
# Compiled computations kept by the process: a run uses a handful (training and evaluation, each
# form's steps); a bound keeps processes that build many algorithms (sweeps, tests) from growing.
MAX_COMPILED = 32


CANCELLED = "cancelled by the coordinator: another copy of the shard finished first"


class WorkerCallError(WorkerError):
    """A worker failed, hung past its deadline or could not be reached during a call."""

    def __init__(self, worker: Worker, rpc: str, code: grpc.StatusCode | None, details: str):
        self.worker = worker
        self.code = code
        super().__init__(
            f"worker {worker.worker_id} ({worker.target}) failed in {rpc}: "
            f"{code.name if code else 'error'}: {details}. The worker process died, hung or is "
            f"unreachable: check its log and that it is a TFF executor service "
            f"(raise --rpc-timeout-s if shards are merely slow)."
        )


class BoundedStub(tff.framework.RemoteExecutorStub):
    """Every RPC gets a deadline; a failed RPC raises instead of being retried forever."""

    def __init__(self, worker: Worker, channel: grpc.Channel, timeout_s: float):
        self._worker = worker
        self._grpc = executor_pb2_grpc.ExecutorGroupStub(channel)
        self._timeout_s = timeout_s
        self.bytes_sent = 0
        self.bytes_received = 0
        self.closed = False
        self._cancel_lock = threading.Lock()
        self._cancelled = False
        self._in_flight: grpc.Future | None = None

    def cancel(self) -> None:
        """Ends the RPC in flight, and every later one until `resume`, with CANCELLED: the call
        they belong to gives up at once (what the worker was computing, it finishes unobserved)."""
        with self._cancel_lock:
            self._cancelled = True
            if self._in_flight is not None:
                self._in_flight.cancel()

    def resume(self) -> None:
        """Lets RPCs through again, for the next call."""
        with self._cancel_lock:
            self._cancelled = False

    def _call(self, rpc: str, request, cancellable: bool = True):
        try:
            with self._cancel_lock:
                if self._cancelled and cancellable:
                    raise WorkerCallError(self._worker, rpc, grpc.StatusCode.CANCELLED, CANCELLED)
                self.bytes_sent += request.ByteSize()
                self._in_flight = getattr(self._grpc, rpc).future(request, timeout=self._timeout_s)
            response = self._in_flight.result()
            self.bytes_received += response.ByteSize()
            return response
        except grpc.FutureCancelledError:
            raise WorkerCallError(self._worker, rpc, grpc.StatusCode.CANCELLED, CANCELLED) from None
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            raise WorkerCallError(self._worker, rpc, code, details) from None
        finally:
            self._in_flight = None

    def get_executor(self, request):
        return self._call("GetExecutor", request)

    def create_value(self, request):
        return self._call("CreateValue", request)

    def create_struct(self, request):
        return self._call("CreateStruct", request)

    def create_call(self, request):
        return self._call("CreateCall", request)

    def create_selection(self, request):
        return self._call("CreateSelection", request)

    def compute(self, request):
        return self._call("Compute", request)

    # TFF disposes of values from finalizers, some at interpreter exit: once the session closed
    # the channel they can no longer be sent, and raising there only prints a traceback. A
    # cancelled call's executor is disposed of too (ExecutorPool.clean_up_executor) and TFF
    # disposes of values of its own: those go through, so the worker frees them.
    def dispose(self, request):
        return None if self.closed else self._call("Dispose", request, cancellable=False)

    def dispose_executor(self, request):
        return None if self.closed else self._call("DisposeExecutor", request, cancellable=False)

    @property
    def is_ready(self) -> bool:
        return True


_COMPILED: collections.OrderedDict[tff.Computation, tff.Computation] = collections.OrderedDict()
_COMPILE_LOCK = threading.Lock()


def compile_for_workers(comp: tff.Computation) -> tff.Computation:
    """TFF's native compilation, done once per computation for every session of the process.

    Each session's context caches only its own compilations, and compiling FedAvg's
    `up_to_merge` costs the coordinator ~0.35 s of CPU: without this every worker, and every
    replacement worker, paid it again in its first round.
    """
    with _COMPILE_LOCK:
        compiled = _COMPILED.pop(comp, None)
        if compiled is None:
            compiled = tff.backends.native.desugar_and_transform_to_native(comp)
        _COMPILED[comp] = compiled  # the most recently used last
        while len(_COMPILED) > MAX_COMPILED:
            _COMPILED.popitem(last=False)
        return compiled


class _ComputationCachingExecutor(tff.framework.RemoteExecutor):
    """Sends each computation to its worker once, not with every call.

    TFF's `RemoteExecutor` creates the computation's value anew at each invocation, so every
    shard re-sent (and the worker re-parsed) FedAvg's ~0.4 MB `up_to_merge`. A value lives in one
    executor of one worker process, so the cache is per executor: a new worker, or a new
    executor for other cardinalities, starts empty.
    """

    def __init__(self, stub: tff.framework.RemoteExecutorStub):
        super().__init__(stub)
        # id(compiled computation) -> (the computation, kept alive so its id stays its own; value)
        self._computations: dict[int, tuple[tff.Computation, Any]] = {}

    async def create_value(self, value, type_spec=None):
        if not isinstance(value, tff.framework.ConcreteComputation):
            return await super().create_value(value, type_spec)
        cached = self._computations.get(id(value))
        if cached is None:
            cached = self._computations[id(value)] = (value, await super().create_value(value, type_spec))
        return cached[1]

    def set_cardinalities(self, cardinalities) -> None:
        self._computations.clear()  # the values belong to the executor this replaces
        super().set_cardinalities(cardinalities)

    def close(self) -> None:
        self._computations.clear()
        super().close()


class ExecutorPool(tff.framework.ExecutorFactory):
    """The worker-side executors of one session: one per cardinalities, the least recently used
    disposed of beyond `capacity`.

    Shards of different sizes need executors of different cardinalities. TFF's
    `ResourceManagingExecutorFactory` keeps ten and silently drops the eleventh without telling
    the worker, which then keeps it, with its TensorFlow sessions (~10 MiB), for good: workers grew
    ~1.6 MiB per round when shard sizes cycled through more than ten values. Here an evicted
    executor is disposed of on the worker. Calls of one session must not overlap (the dispatcher
    runs one at a time per worker), or one could evict the executor another is using.
    """

    def __init__(self, stub: tff.framework.RemoteExecutorStub, capacity: int = _MAX_EXECUTORS):
        self._stub = stub
        self._capacity = capacity
        self._executors: collections.OrderedDict[tuple, _ComputationCachingExecutor] = (
            collections.OrderedDict()
        )

    def create_executor(self, cardinalities):
        key = self._key(cardinalities)
        executor = self._executors.pop(key, None)
        if executor is None:
            executor = _ComputationCachingExecutor(self._stub)
            executor.set_cardinalities({tff.CLIENTS: 0, **cardinalities})
        self._executors[key] = executor  # the most recently used last
        while len(self._executors) > self._capacity:
            _, evicted = self._executors.popitem(last=False)
            evicted.close()
        return executor

    def clean_up_executor(self, cardinalities) -> None:
        """After a failed call: drop the executor (the error being raised says what failed)."""
        executor = self._executors.pop(self._key(cardinalities), None)
        if executor is not None:
            with contextlib.suppress(WorkerCallError):
                executor.close()

    @staticmethod
    def _key(cardinalities) -> tuple:
        return tuple(sorted((str(p), n) for p, n in {tff.CLIENTS: 0, **cardinalities}.items()))
