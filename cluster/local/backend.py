"""Workers as child processes of the coordinator on this machine."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import grpc

from cluster.backend import Slowdown, Worker, WorkerBackend, slot_of
from cluster.errors import WorkerError, WorkerStartError
from cluster.local import scratch
from cluster.local.binary import find_worker_binary
from cluster.local.netns import namespaces_unavailable, unshare_command
from cluster.local.options import LocalWorkerOptions
from cluster.local.ports import listening_ports
from cluster.local.spawner import Spawner
from cluster.local.throttle import Throttle, throttle

_LOG = logging.getLogger(__name__)
_STATUS = logging.getLogger("cluster.status")  # what a person running an experiment should see
SOCKETS_PREFIX = "fedrun-sockets-"
LOG_PREFIX = "fedrun-workers-"
_POLL_INTERVAL_S = 0.05
_STOP_GRACE_S = 5.0  # the binary exits at once on SIGTERM; this only bounds a stuck one
_LOG_TAIL_CHARS = 2000
_EXPOSED_WARNING = (
    "local workers run WITHOUT isolation: TFF's worker_binary listens on all interfaces without "
    "authentication, so anyone who can reach this machine can run TensorFlow graphs (which read "
    "and write files) as this user. Firewall the workers' ports, or make `unshare` work here"
)

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class _WorkerProcess:
    worker_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_start: int  # offset where this process's output begins in a log shared with earlier ones
    launched_at: float  # time.monotonic()
    socket_path: Path | None  # where an isolated worker is reached; None: on a loopback port


class LocalProcessBackend(WorkerBackend):
    """Runs each worker as a TFF worker_binary child process of the coordinator.

    The binary listens on all interfaces without authentication (it has no bind-address flag).
    Isolated, it does so in a network namespace of its own (cluster.local.netns) and the coordinator
    dials a Unix socket that only this user can open; otherwise it dials the loopback port that
    anyone who reaches this machine can also use.
    Calls are serialized: replace() holds other calls for the worker's start-up time (~1 s).
    """

    def __init__(self, options: LocalWorkerOptions | None = None) -> None:
        self._options = options or LocalWorkerOptions()
        self._lock = threading.RLock()
        self._processes: dict[str, _WorkerProcess] = {}
        self._workers: dict[str, Worker] = {}
        self._spawner: Spawner | None = None
        self._command: list[str] = []
        self._env: dict[str, str] = {}
        self._log_dir = Path()
        self._private_log_dir = False
        self._socket_dir: Path | None = None  # set when workers are isolated
        self._launches = 0
        self._throttles: dict[str, Throttle] = {}  # the slowed workers' current processes
        self._cpu_share = 0.0  # CPUs each worker would have unslowed

    def start(self, num_workers: int) -> list[Worker]:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1; got {num_workers}")
        with self._lock:
            if self._spawner is not None:
                raise WorkerError("this backend already runs workers; call stop() first")
            try:
                self._prepare(find_worker_binary(self._options.binary))
                self._cpu_share = self._options.cpu_share or len(os.sched_getaffinity(0)) / num_workers
                # All processes start at once, so waiting on them in turn costs the slowest one.
                launched = [self._launch(f"local-{index}") for index in range(num_workers)]
                deadline = time.monotonic() + self._options.ready_timeout_s
                for worker_process in launched:
                    worker = self._await_ready(worker_process, deadline)
                    self._workers[worker.worker_id] = worker
                    self._slow_down(worker_process)
            except BaseException:
                self.stop()
                raise
            return self.workers()

    def workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers.values())

    def is_alive(self, worker_id: str) -> bool:
        with self._lock:
            return self._process_of(worker_id).process.poll() is None

    def replace(self, worker_id: str) -> Worker:
        with self._lock:
            old = self._process_of(worker_id)
            self._release(worker_id)
            _stop_processes([old.process])
            worker_process = self._launch(worker_id)
            deadline = time.monotonic() + self._options.ready_timeout_s
            try:
                worker = self._await_ready(worker_process, deadline)
                self._slow_down(worker_process)
            except BaseException:
                self._release(worker_id)
                _stop_processes([worker_process.process])
                raise
            self._workers[worker_id] = worker
            return worker

    def slowdowns(self) -> dict[str, Slowdown]:
        with self._lock:
            return {
                worker_id: Slowdown(self._options.slow[worker_id], held.mechanism)
                for worker_id, held in self._throttles.items()
            }

    def stop(self) -> None:
        with self._lock:
            for worker_id in list(self._throttles):  # a stopped process would not see SIGTERM
                self._release(worker_id)
            _stop_processes(p.process for p in self._processes.values())
            self._processes.clear()
            self._workers.clear()
            if self._spawner is not None:
                self._spawner.close()
                self._spawner = None
            if self._private_log_dir:
                shutil.rmtree(self._log_dir, ignore_errors=True)
                self._private_log_dir = False
            if self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)
                self._socket_dir = None
            atexit.unregister(self.stop)

    def _prepare(self, binary: Path) -> None:
        options = self._options
        # Port 0: a fixed port could be silently shared with another worker_binary.
        self._command = options.worker_command(binary, port=0)
        self._env = options.worker_environment()
        if options.log_dir is None:
            self._log_dir = scratch.make(LOG_PREFIX)
            self._private_log_dir = True
        else:
            self._log_dir = Path(options.log_dir)
            try:
                self._log_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise WorkerStartError(
                    f"cannot create the worker log_dir {self._log_dir}: {error}; choose a writable log_dir"
                ) from error
        if self._isolate():
            # mkdtemp makes it 0700; in the temporary directory, as a socket path has <108 bytes.
            self._socket_dir = scratch.make(SOCKETS_PREFIX)
            # The launcher imports this very copy of `cluster`, installed or not.
            package_root = str(Path(__file__).resolve().parents[1])
            self._env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [package_root, self._env.get("PYTHONPATH")])
            )
        self._spawner = Spawner()
        atexit.register(self.stop)

    def _isolate(self) -> bool:
        isolation = self._options.isolation
        if isolation == "none":
            return False
        why_not = namespaces_unavailable()
        if why_not is None:
            return True
        if isolation == "netns":
            raise WorkerStartError(
                f"cannot isolate local workers: {why_not}; enable unprivileged user namespaces, "
                f'or accept an exposed worker port with isolation "none"'
            )
        _LOG.warning("%s (%s).", _EXPOSED_WARNING, why_not)
        return False

    def _launch(self, worker_id: str) -> _WorkerProcess:
        if self._spawner is None:
            raise WorkerError(f"cannot start worker {worker_id!r}: call start() first")
        log_path = self._log_dir / f"{worker_id}.log"
        command, socket_path = self._command, None
        if self._socket_dir is not None:
            # A new path per launch: a channel to a replaced worker cannot reach its successor.
            self._launches += 1
            socket_path = self._socket_dir / f"{worker_id}.{self._launches}.sock"
            launcher = [sys.executable, "-m", "cluster.local.isolated_worker", str(socket_path)]
            command = unshare_command(launcher + self._command)
        with open(log_path, "ab") as log:
            log_start = log.tell()  # before the child shares, and advances, this file offset
            launched_at = time.monotonic()
            try:
                process = self._spawner.popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    # Its own process group: a terminal's Ctrl-C reaches only the coordinator,
                    # which then stops its workers itself.
                    process_group=0,
                )
            except (OSError, subprocess.SubprocessError) as error:
                raise WorkerStartError(
                    f"could not run worker binary {self._command[0]}: {error}; "
                    f"pass the path of TFF's worker_binary"
                ) from error
        worker_process = _WorkerProcess(worker_id, process, log_path, log_start, launched_at, socket_path)
        self._processes[worker_id] = worker_process
        return worker_process

    def _await_ready(self, worker_process: _WorkerProcess, deadline: float) -> Worker:
        if worker_process.socket_path is not None:
            socket_path = worker_process.socket_path
            self._poll_until(
                worker_process,
                deadline,
                "listen behind its Unix socket",
                lambda _: socket_path.exists(),
            )
            target = f"unix:{socket_path}"
        else:
            port = self._poll_until(worker_process, deadline, "listen on a port", _listening_port)
            # The binary binds [::] dual-stack (0.0.0.0 without IPv6): 127.0.0.1 reaches it.
            target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel:
            ready = grpc.channel_ready_future(channel)
            try:
                self._poll_until(worker_process, deadline, "accept gRPC connections", lambda _: ready.done())
            finally:
                ready.cancel()
        _LOG.info(
            "worker %s ready at %s %.2f s after launch (log: %s)",
            worker_process.worker_id,
            target,
            time.monotonic() - worker_process.launched_at,
            worker_process.log_path,
        )
        return Worker(worker_process.worker_id, target)

    def _slow_down(self, worker_process: _WorkerProcess) -> None:
        """Throttles a ready worker's process group if the options slow its slot down."""
        factor = self._options.slow.get(worker_process.worker_id)
        if factor is not None:
            self._throttles[worker_process.worker_id] = held = throttle(
                self._options.slow_mechanism,
                worker_process.worker_id,
                worker_process.process.pid,  # the group leader: the binary runs in its group
                factor,
                self._cpu_share,
            )
            _STATUS.info("worker %s slowed %g times: %s", worker_process.worker_id, factor, held.mechanism)

    def _release(self, worker_id: str) -> None:
        held = self._throttles.pop(worker_id, None)
        if held is not None:
            held.release()

    def _poll_until(
        self,
        worker_process: _WorkerProcess,
        deadline: float,
        goal: str,
        check: Callable[[_WorkerProcess], _T],
    ) -> _T:
        """Polls `check` until it returns something truthy; fails fast if the worker exits."""
        while True:
            exit_code = worker_process.process.poll()
            if exit_code is not None:
                raise WorkerStartError(
                    f"worker {worker_process.worker_id} exited with exit code {exit_code} before "
                    f"it could {goal}; {self._log_excerpt(worker_process)}"
                )
            if result := check(worker_process):
                return result
            if time.monotonic() >= deadline:
                raise WorkerStartError(
                    f"worker {worker_process.worker_id} did not {goal} {self._options.within}; "
                    f"raise {self._options.timeout_name} "
                    f"if the machine is busy. {self._log_excerpt(worker_process)}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _log_excerpt(self, worker_process: _WorkerProcess) -> str:
        where = (
            "(set LocalWorkerOptions.log_dir to keep worker logs)"
            if self._private_log_dir
            else str(worker_process.log_path)
        )
        return f"the end of its log {where}:\n{_log_tail(worker_process)}"

    def _process_of(self, worker_id: str) -> _WorkerProcess:
        return slot_of(self._processes, worker_id)


def _listening_port(worker_process: _WorkerProcess) -> int | None:
    try:
        ports = listening_ports(worker_process.process.pid)
    except OSError:  # exiting; the next poll() says how
        return None
    if len(ports) > 1:
        raise WorkerStartError(
            f"worker {worker_process.worker_id} listens on several ports {sorted(ports)}, so its "
            f"gRPC port is ambiguous; check that {worker_process.process.args[0]} is TFF's "
            f"worker_binary"
        )
    return next(iter(ports), None)


def _log_tail(worker_process: _WorkerProcess) -> str:
    try:
        with open(worker_process.log_path, "rb") as log:
            end = log.seek(0, os.SEEK_END)
            log.seek(max(worker_process.log_start, end - _LOG_TAIL_CHARS))
            return log.read().decode(errors="replace") or "(empty)"
    except OSError as error:
        return f"(unreadable: {error})"


def _stop_processes(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM all at once, then SIGKILL whatever still runs after the grace period."""
    processes = list(processes)
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    # Only while unreaped: the group id cannot be reused by someone else before then.
    if process.poll() is None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
