"""LocalProcessBackend with real worker_binary processes and real gRPC on loopback.

Also pins the pure pieces behind it (/proc parsing, options, registry), which need no worker.
Workers whose port a test inspects run exposed (isolation="none"); tests/integration/
test_isolation.py covers isolated ones.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cluster import (
    BACKENDS,
    ClusterSettings,
    LocalProcessBackend,
    LocalWorkerOptions,
    Worker,
    WorkerError,
    WorkerSettings,
    WorkerStartError,
    backend_options,
    create_backend,
    find_worker_binary,
)
from cluster.local.ports import listening_ports, parse_listening_sockets, parse_socket_inode
from cluster.registry import BackendEntry
from tests.support.processes import fake_binary
from tests.support.waiting import env_with_repo_on_path, eventually, gone, grpc_ready, live_descendants

pytestmark = pytest.mark.timeout(120)

EXPOSED = LocalWorkerOptions(isolation="none")


@pytest.fixture(autouse=True)
def every_backend_stopped() -> Iterator[None]:
    """Adds to tests/conftest.py's check for leftover worker processes."""
    yield
    spawners = [thread for thread in threading.enumerate() if thread.name == "fedrun-spawner"]
    assert not spawners, "a backend was not stopped: its spawner thread still runs"


@pytest.fixture
def backend() -> Iterator[LocalProcessBackend]:
    backend = LocalProcessBackend(EXPOSED)
    yield backend
    backend.stop()


def _port(target: str) -> int:
    return int(target.rsplit(":", 1)[1])


def _listener_pid_by_port() -> dict[int, int]:
    """Listening port -> pid, as psutil sees the processes this test started."""
    return {
        connection.laddr.port: process.pid
        for process in live_descendants()
        for connection in process.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN
    }


def test_start_gives_distinct_ready_workers_listening_on_their_targets(
    backend: LocalProcessBackend,
) -> None:
    workers = backend.start(2)

    assert [worker.worker_id for worker in workers] == ["local-0", "local-1"]
    assert len({worker.target for worker in workers}) == 2
    assert backend.workers() == workers
    for worker in workers:
        assert worker.target.startswith("127.0.0.1:")
        assert backend.is_alive(worker.worker_id)
        assert grpc_ready(worker.target)
    pid_by_port = _listener_pid_by_port()
    assert sorted(pid_by_port) == sorted(_port(worker.target) for worker in workers)
    for pid in pid_by_port.values():
        worker_process = psutil.Process(pid)
        assert "--max_concurrent_computation_calls=2" in worker_process.cmdline()
        assert worker_process.environ()["TF_NUM_INTRAOP_THREADS"] == "1"
        assert worker_process.environ()["TF_NUM_INTEROP_THREADS"] == "2"
    with pytest.raises(WorkerError, match="stop"):
        backend.start(1)


def test_replace_starts_a_fresh_worker_and_stops_the_old_one(
    backend: LocalProcessBackend,
) -> None:
    old, untouched = backend.start(2)
    old_pid = _listener_pid_by_port()[_port(old.target)]

    fresh = backend.replace("local-0")

    assert fresh.worker_id == "local-0"
    assert backend.is_alive("local-0")
    assert grpc_ready(fresh.target)
    assert gone(old_pid)
    assert _listener_pid_by_port()[_port(fresh.target)] != old_pid
    assert backend.workers() == [fresh, untouched]


def test_killed_worker_is_not_alive_until_replaced(backend: LocalProcessBackend) -> None:
    (worker,) = backend.start(1)
    os.kill(_listener_pid_by_port()[_port(worker.target)], signal.SIGKILL)

    assert eventually(lambda: not backend.is_alive("local-0"))

    fresh = backend.replace("local-0")
    assert backend.is_alive("local-0")
    assert grpc_ready(fresh.target)


def test_stop_is_idempotent_and_leaves_no_process(backend: LocalProcessBackend) -> None:
    backend.start(2)
    pids = list(_listener_pid_by_port().values())
    assert len(pids) == 2

    backend.stop()
    backend.stop()

    assert all(gone(pid) for pid in pids)
    assert backend.workers() == []
    with pytest.raises(WorkerError, match="not started"):
        backend.is_alive("local-0")


def test_backends_started_together_get_distinct_ports_and_outlive_the_starting_threads() -> None:
    backends = [LocalProcessBackend(EXPOSED), LocalProcessBackend(EXPOSED)]
    try:
        # The pool's threads have ended when the block exits; the workers they asked for must
        # not die with them (the parent-death signal is per thread).
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            started = list(pool.map(lambda backend: backend.start(2), backends))
        workers: list[Worker] = [worker for batch in started for worker in batch]

        assert len({_port(worker.target) for worker in workers}) == 4
        assert sorted(_listener_pid_by_port()) == sorted(_port(worker.target) for worker in workers)
        for backend, batch in zip(backends, started):
            for worker in batch:
                assert grpc_ready(worker.target)
                assert backend.is_alive(worker.worker_id)
    finally:
        for backend in backends:
            backend.stop()


_COORDINATOR = """
import sys
import time
from pathlib import Path
import psutil
from cluster import LocalProcessBackend, LocalWorkerOptions
# A log_dir of the test's: a killed coordinator cannot remove a private one.
LocalProcessBackend(LocalWorkerOptions(log_dir=Path(sys.argv[1]))).start(2)
print(*(child.pid for child in psutil.Process().children()), flush=True)
time.sleep(600)
"""


def test_workers_die_with_a_coordinator_killed_by_sigkill(tmp_path: Path) -> None:
    coordinator = subprocess.Popen(
        [sys.executable, "-c", _COORDINATOR, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env_with_repo_on_path(),
    )
    worker_pids: list[int] = []
    try:
        assert coordinator.stdout is not None
        worker_pids = [int(pid) for pid in coordinator.stdout.readline().split()]
        assert len(worker_pids) == 2
        assert not any(gone(pid) for pid in worker_pids)

        coordinator.kill()
        coordinator.wait()

        assert eventually(lambda: all(gone(pid) for pid in worker_pids), timeout_s=5.0)
    finally:
        coordinator.kill()
        coordinator.wait()
        for pid in worker_pids:  # orphans are no longer our descendants: clean up by pid
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_missing_binary_is_a_start_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_worker_binary"
    backend = LocalProcessBackend(LocalWorkerOptions(binary=missing))

    with pytest.raises(WorkerStartError, match="does not exist") as error:
        backend.start(1)
    assert str(missing) in str(error.value)


def test_non_executable_binary_is_a_start_error_saying_chmod(tmp_path: Path) -> None:
    binary = tmp_path / "worker_binary"
    binary.write_text("")

    with pytest.raises(WorkerStartError, match="chmod \\+x"):
        find_worker_binary(binary)


def test_binary_that_cannot_be_executed_is_a_start_error(tmp_path: Path) -> None:
    not_a_program = tmp_path / "worker_binary"
    not_a_program.write_text("")
    not_a_program.chmod(0o755)
    backend = LocalProcessBackend(LocalWorkerOptions(binary=not_a_program))

    with pytest.raises(WorkerStartError, match="could not run worker binary"):
        backend.start(1)


def test_missing_tff_is_a_start_error_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(WorkerStartError, match="requirements/tff.txt"):
        find_worker_binary()


def test_finding_and_starting_workers_does_not_import_tensorflow() -> None:
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cluster; cluster.find_worker_binary(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', "
            "'tensorflow_federated'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env_with_repo_on_path(),
    ).stdout

    assert imported.strip() == "[]"


def test_binary_that_never_listens_times_out_and_is_stopped(tmp_path: Path) -> None:
    # A fake standing in for a hung worker_binary: it runs but never opens a port.
    hung = fake_binary(tmp_path, "sleep 600")
    backend = LocalProcessBackend(LocalWorkerOptions(binary=hung, ready_timeout_s=1.0))
    began = time.monotonic()

    with pytest.raises(WorkerStartError, match="ready_timeout_s"):
        backend.start(2)

    assert time.monotonic() - began < 4.0
    assert live_descendants() == []  # neither the scripts nor their `sleep` children remain


def test_worker_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fake standing in for a hung worker_binary that also ignores SIGTERM (as does its child).
    stubborn = fake_binary(tmp_path, "trap '' TERM\nsleep 600")
    monkeypatch.setattr("cluster.local.backend._STOP_GRACE_S", 0.5)
    backend = LocalProcessBackend(LocalWorkerOptions(binary=stubborn, ready_timeout_s=0.5))
    began = time.monotonic()

    with pytest.raises(WorkerStartError):
        backend.start(1)

    assert time.monotonic() - began < 3.0
    assert live_descendants() == []


def test_binary_that_exits_at_once_reports_exit_code_and_log(tmp_path: Path) -> None:
    failing = fake_binary(tmp_path, "echo 'fake worker: unknown flag' >&2\nexit 3")
    backend = LocalProcessBackend(LocalWorkerOptions(binary=failing))

    with pytest.raises(WorkerStartError, match="exit code 3") as error:
        backend.start(1)
    assert "fake worker: unknown flag" in str(error.value)


def test_log_dir_keeps_each_workers_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Importing TensorFlow (any earlier test may have) sets TF_CPP_MIN_LOG_LEVEL=1 in this
    # process, and workers inherit it: the INFO line below would not be written.
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    log = tmp_path / "logs" / "local-0.log"
    with LocalProcessBackend(LocalWorkerOptions(log_dir=tmp_path / "logs")) as backend:
        backend.start(1)
        # The binary logs this just after it starts listening: on a busy machine, after ready.
        assert eventually(lambda: "ExecutorService started" in log.read_text())

    assert "ExecutorService started" in log.read_text()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrent_computation_calls", 0),
        ("ready_timeout_s", 0.0),
        ("grpc_max_message_mb", 4096),
    ],
)
def test_invalid_options_name_the_field_to_change(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        LocalWorkerOptions(**{field: value})


def test_registry_builds_the_local_backend() -> None:
    backend = create_backend(ClusterSettings(WorkerSettings(start_timeout_s=5.0)))

    assert isinstance(backend, LocalProcessBackend)
    assert backend_options(ClusterSettings(WorkerSettings(start_timeout_s=5.0))).ready_timeout_s == 5.0


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(WorkerError, match="choose one of local"):
        create_backend(ClusterSettings(WorkerSettings(backend="nonexistent")))


def test_backend_with_missing_dependency_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        BACKENDS,
        "ray",
        BackendEntry("fedrun_test_absent_module", "RayBackend", "cluster.ray.options", extra="ray"),
    )

    with pytest.raises(WorkerError, match=r"pip install 'fedrun\[ray\]'"):
        create_backend(ClusterSettings(WorkerSettings(backend="ray")))


# Captured from a worker_binary started with --port=0 (LISTEN on [::]:36803, inode 5018), plus an
# established connection and a listener on [::1] that belong to other processes.
_TCP6_TABLE = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:8FC3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5018 1 00000000e9013660 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 7001 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:8FC3 0000000000000000FFFF00000100007F:D4A2 01 00000000:00000000 00:00000000 00000000     0        0 7002 1 0000000000000000 20 4 30 10 -1
"""  # noqa: E501

_TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1678 1 000000007e67bb01 100 0 0 10 0
   1: 0100007F:07E8 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1679 1 000000007e67bb01 20 4 30 10 -1
"""  # noqa: E501


def test_parse_listening_sockets_maps_inode_to_port_of_listen_rows_only() -> None:
    assert parse_listening_sockets(_TCP6_TABLE) == {5018: 36803, 7001: 8080}
    assert parse_listening_sockets(_TCP_TABLE) == {1678: 2024}


def test_parse_socket_inode_reads_socket_links_only() -> None:
    assert parse_socket_inode("socket:[5018]") == 5018
    assert parse_socket_inode("pipe:[5018]") is None
    assert parse_socket_inode("/dev/null") is None


def test_listening_ports_sees_own_listener_only() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        assert port in listening_ports(os.getpid())
        assert port not in listening_ports(os.getppid())


def test_a_failed_isolation_check_leaves_no_temporary_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        "cluster.local.backend.namespaces_unavailable", lambda: "user namespaces are disabled"
    )
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the backend's private folders go

    with pytest.raises(WorkerStartError, match="user namespaces are disabled"):
        LocalProcessBackend(LocalWorkerOptions(isolation="netns")).start(1)
    assert list(tmp_path.iterdir()) == []
