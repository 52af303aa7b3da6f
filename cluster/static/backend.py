"""Workers that someone else runs (containers, Kubernetes pods, other hosts), given by address.

fedrun neither starts nor stops them: start() checks that each address answers as a TFF executor
service, replace() can only wait for a restarted worker to come back at the same address.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import grpc

from cluster.backend import Capabilities, Worker, WorkerBackend, slot_of
from cluster.errors import WorkerError, WorkerStartError
from cluster.static.options import REMOTE_RISK, StaticWorkerOptions
from cluster.static.probe import ProbeResult, Verdict, answers, probe_executor

_LOG = logging.getLogger(__name__)
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
                f"({result.detail}) after ready_timeout_s={self._options.ready_timeout_s} s; "
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
        deadline = time.monotonic() + self._options.ready_timeout_s
        with concurrent.futures.ThreadPoolExecutor(len(self._channels)) as pool:
            results = dict(
                zip(
                    self._channels,
                    pool.map(lambda channel: _await_executor(channel, deadline), self._channels.values()),
                )
            )
        problems = [
            f"{self._workers[worker_id].target} is {result.verdict.value} ({result.detail})"
            for worker_id, result in results.items()
            if result.verdict is not Verdict.EXECUTOR
        ]
        if problems:
            raise WorkerStartError(
                f"worker address check failed within ready_timeout_s="
                f"{self._options.ready_timeout_s} s: {'; '.join(problems)}. Check that each "
                f"address runs `fedrun worker` (TFF's worker_binary) and is reachable from here"
            )

    def _channel_of(self, worker_id: str) -> grpc.Channel:
        return slot_of(self._channels, worker_id)


def _await_executor(channel: grpc.Channel, deadline: float) -> ProbeResult:
    """Probes until the target answers as an executor, is plainly something else, or time is up."""
    while True:
        remaining = deadline - time.monotonic()
        result = probe_executor(channel, max(0.1, min(_ATTEMPT_TIMEOUT_S, remaining)))
        if result.verdict is not Verdict.UNREACHABLE or remaining <= _RETRY_INTERVAL_S:
            return result
        time.sleep(_RETRY_INTERVAL_S)
