"""Workers that someone else runs (containers, Kubernetes pods, other hosts), given by address.

fedrun neither starts nor stops them: start() checks that each address answers as a TFF executor
service, replace() can only wait for a restarted worker to come back at the same address.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable

import grpc

from cluster.backend import Capabilities, Worker, WorkerBackend, slot_of
from cluster.errors import WorkerError, WorkerStartError
from cluster.static.options import REMOTE_RISK, StaticWorkerOptions
from cluster.static.probe import ProbeResult, Verdict, answers, probe_executor

_LOG = logging.getLogger(__name__)
_STATUS = logging.getLogger("cluster.status")  # what a long wait is waiting for
_STATUS_EVERY_S = 3.0


def _why(result: ProbeResult | None) -> str:
    if result is None:
        return "no answer yet"
    return "refuses connections" if "refused" in result.detail.lower() else result.detail


_ATTEMPT_TIMEOUT_S = 2.0  # one start-up probe; retried until ready_timeout_s
_RETRY_INTERVAL_S = 0.5
# gRPC's defaults back off up to 120 s between reconnects and 30 s between DNS lookups: a pod
# that becomes ready would go unnoticed for that long. A channel of its own connections, not
# the process-wide pool, lets replace() start afresh instead of inheriting a backoff.
_CHANNEL_OPTIONS = [
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
    ("grpc.use_local_subchannel_pool", 1),
]


class StaticBackend(WorkerBackend):
    """Connects to workers at fixed addresses; worker ids are "static-0", "static-1", ..."""

    capabilities = Capabilities(starts_workers=False)

    def __init__(self, options: StaticWorkerOptions) -> None:
        self._options = options
        self._lock = threading.RLock()
        self._workers: dict[str, Worker] = {}
        self._channels: dict[str, grpc.Channel] = {}

    def start(self, num_workers: int) -> list[Worker]:
        addresses = self._options.addresses
        with self._lock:
            if self._workers:
                raise WorkerError("this backend is already connected; call stop() first")
            if num_workers != len(addresses):
                raise WorkerStartError(
                    f"{num_workers} workers requested but {len(addresses)} addresses given; "
                    f"the static backend runs exactly one worker per address"
                )
            if remote := self._options.remote_addresses:
                _LOG.warning(
                    "remote workers %s: %s; make sure a NetworkPolicy or firewall lets only the "
                    "coordinator connect to them.",
                    ", ".join(remote),
                    REMOTE_RISK,
                )
            try:
                for index, address in enumerate(addresses):
                    worker_id = f"static-{index}"
                    self._channels[worker_id] = grpc.insecure_channel(address, _CHANNEL_OPTIONS)
                    self._workers[worker_id] = Worker(worker_id, address)
                self._await_all_ready()
            except BaseException:
                self.stop()
                raise
            return self.workers()

    def workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers.values())

    def is_alive(self, worker_id: str) -> bool:
        """Whether the worker still answers; start() or replace() established what it is."""
        with self._lock:
            channel = self._channel_of(worker_id)
        return answers(channel, self._options.probe_timeout_s)

    def replace(self, worker_id: str) -> Worker:
        """Waits up to ready_timeout_s for the worker to answer again: fedrun cannot restart it."""
        with self._lock:
            self._channel_of(worker_id).close()
            # A fresh channel: the old one may be backing off from the dead worker's address.
            worker = self._workers[worker_id]
            channel = self._channels[worker_id] = grpc.insecure_channel(worker.target, _CHANNEL_OPTIONS)
        result = _await_executor(channel, time.monotonic() + self._options.ready_timeout_s)
        if result.verdict is not Verdict.EXECUTOR:
            raise WorkerError(
                f"worker {worker_id} at {worker.target} is {result.verdict.value} "
                f"({result.detail}) after {self._options.timeout_name}={self._options.ready_timeout_s:g} s; "
                f"it is run outside fedrun: restart it there (e.g. its pod or container)"
            )
        return worker

    def stop(self) -> None:
        """Closes the connections; the workers themselves keep running."""
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._workers.clear()

    def _await_all_ready(self) -> None:
        """Probes every address at once; says every few seconds which it still waits for."""
        options = self._options
        deadline = time.monotonic() + options.ready_timeout_s
        latest: dict[str, ProbeResult] = {}
        with concurrent.futures.ThreadPoolExecutor(len(self._channels)) as pool:
            pending = {
                pool.submit(_await_executor, channel, deadline, latest.__setitem__, worker_id): worker_id
                for worker_id, channel in self._channels.items()
            }
            results = {}
            while pending:
                done, _ = concurrent.futures.wait(pending, timeout=_STATUS_EVERY_S)
                for future in done:
                    results[pending.pop(future)] = future.result()
                if pending:
                    waiting = [f"{self._workers[w].target} ({_why(latest.get(w))})" for w in pending.values()]
                    _STATUS.info(
                        "waiting for %d of %d static workers: %s (up to %s=%g s)",
                        len(waiting),
                        len(self._channels),
                        ", ".join(waiting),
                        options.timeout_name,
                        options.ready_timeout_s,
                    )
        problems = [
            f"{self._workers[worker_id].target} is {result.verdict.value} ({result.detail})"
            for worker_id, result in results.items()
            if result.verdict is not Verdict.EXECUTOR
        ]
        if problems:
            raise WorkerStartError(
                f"worker address check failed within {options.timeout_name}={options.ready_timeout_s:g} s: "
                f"{'; '.join(problems)}. Check that each address runs `fedrun worker` (TFF's "
                f"worker_binary) and is reachable from here, or raise {options.timeout_name} if it is "
                f"still starting"
            )

    def _channel_of(self, worker_id: str) -> grpc.Channel:
        return slot_of(self._channels, worker_id)


def _await_executor(
    channel: grpc.Channel,
    deadline: float,
    report: Callable[[str, ProbeResult], None] = lambda key, result: None,
    key: str = "",
) -> ProbeResult:
    """Probes until the target answers as an executor, is plainly something else, or time is up;
    `report(key, result)` sees every probe's result."""
    while True:
        remaining = deadline - time.monotonic()
        result = probe_executor(channel, max(0.1, min(_ATTEMPT_TIMEOUT_S, remaining)))
        report(key, result)
        if result.verdict is not Verdict.UNREACHABLE or remaining <= _RETRY_INTERVAL_S:
            return result
        time.sleep(_RETRY_INTERVAL_S)
