"""StaticBackend against workers someone else runs: real `fedrun worker` processes, local workers
standing in for pods, and servers that are not TFF executor services."""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from cluster import (
    ClusterSettings,
    LocalProcessBackend,
    LocalWorkerOptions,
    WorkerError,
    WorkerSettings,
    WorkerStartError,
    create_backend,
)
from cluster.static.backend import StaticBackend
from cluster.static.options import StaticWorkerOptions
from fedrun.errors import FedrunError
from tests.support.backends import free_port, start_fedrun_worker, stop_fedrun_worker
from tests.support.configs import flat_config
from tests.support.waiting import env_with_repo_on_path, eventually, grpc_ready

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def exposed_workers() -> Iterator[LocalProcessBackend]:
    """Workers run by "someone else": a backend this test owns, not the StaticBackend."""
    backend = LocalProcessBackend(LocalWorkerOptions(isolation="none"))
    backend.start(2)
    yield backend
    backend.stop()


def _static(*addresses: str, **options) -> StaticBackend:
    return StaticBackend(StaticWorkerOptions(tuple(addresses), **options))


def test_connects_to_running_workers_and_leaves_them_running(exposed_workers: LocalProcessBackend) -> None:
    with LocalProcessBackend(LocalWorkerOptions(isolation="netns")) as isolated:
        targets = [exposed_workers.workers()[0].target, isolated.start(1)[0].target]  # host:port, unix:
        backend = _static(*targets)

        workers = backend.start(2)

        assert [(w.worker_id, w.target) for w in workers] == [
            ("static-0", targets[0]),
            ("static-1", targets[1]),
        ]
        assert backend.workers() == workers
        assert backend.is_alive("static-0") and backend.is_alive("static-1")
        backend.stop()
        backend.stop()
        assert exposed_workers.is_alive("local-0") and isolated.is_alive("local-0")
        assert all(grpc_ready(target) for target in targets)
        with pytest.raises(WorkerError, match="not started"):
            backend.is_alive("static-0")


def test_unreachable_address_is_named_within_the_timeout() -> None:
    address = f"127.0.0.1:{free_port()}"
    began = time.monotonic()

    with pytest.raises(WorkerStartError, match=f"{address} is unreachable.*UNAVAILABLE"):
        _static(address, ready_timeout_s=1.0).start(1)
    assert time.monotonic() - began < 4.0


def test_grpc_server_without_tff_is_not_an_executor_service() -> None:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    began = time.monotonic()
    try:
        with pytest.raises(WorkerStartError, match="is not a TFF executor service.*UNIMPLEMENTED"):
            _static(f"127.0.0.1:{port}", ready_timeout_s=30.0).start(1)
    finally:
        server.stop(grace=None)
    assert time.monotonic() - began < 10.0  # a definite answer: no waiting for the timeout


def test_http_server_is_not_an_executor_service() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(WorkerStartError, match="is not a TFF executor service.*HTTP/2"):
            _static(f"127.0.0.1:{server.server_address[1]}", ready_timeout_s=30.0).start(1)
    finally:
        server.shutdown()
        server.server_close()


def test_all_bad_addresses_are_reported_together(exposed_workers: LocalProcessBackend) -> None:
    good = exposed_workers.workers()[0].target
    bad = [f"127.0.0.1:{free_port()}", "unix:/nonexistent/worker.sock"]

    with pytest.raises(WorkerStartError) as error:
        _static(good, *bad, ready_timeout_s=1.0).start(3)
    assert all(f"{address} is unreachable" in str(error.value) for address in bad)
    assert good not in str(error.value)


def test_worker_count_must_match_the_addresses() -> None:
    with pytest.raises(WorkerStartError, match="3 workers requested but 1 addresses"):
        _static("127.0.0.1:8000").start(3)


@pytest.mark.parametrize("address", ["worker-0.fedrun-workers:8000", "192.0.2.7:8000", "[fd00::2]:8000"])
def test_remote_address_needs_allow_remote_workers(address: str) -> None:
    with pytest.raises(ValueError, match="without authentication.*allow_remote_workers"):
        StaticWorkerOptions((address,))
    assert StaticWorkerOptions((address,), allow_remote_workers=True).remote_addresses == [address]


@pytest.mark.parametrize("address", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "unix:/run/w.sock"])
def test_addresses_on_this_machine_need_no_flag(address: str) -> None:
    assert StaticWorkerOptions((address,)).remote_addresses == []


@pytest.mark.parametrize("address", ["worker-0", "host:", "host:0", "host:70000", ":8000", "unix:"])
def test_malformed_address_says_the_expected_form(address: str) -> None:
    with pytest.raises(ValueError, match="host:port|unix:/path"):
        StaticWorkerOptions((address,))


def test_allowed_remote_worker_is_used_with_a_warning_naming_the_risk(
    exposed_workers: LocalProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    port = exposed_workers.workers()[0].target.rsplit(":", 1)[1]
    host = next(
        a.address
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    )
    backend = _static(f"{host}:{port}", allow_remote_workers=True)

    with caplog.at_level(logging.WARNING):
        (worker,) = backend.start(1)
    backend.stop()

    assert worker.target == f"{host}:{port}"
    assert "without authentication" in caplog.text and "NetworkPolicy or firewall" in caplog.text


def test_fedrun_worker_passes_sigterm_on_and_exits_with_the_workers_status() -> None:
    worker = start_fedrun_worker(free_port(), stderr=subprocess.PIPE)  # a few lines: no pipe stall
    (binary,) = psutil.Process(worker.pid).children()

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=10) == 128 + signal.SIGTERM
    assert eventually(lambda: not psutil.pid_exists(binary.pid) or binary.status() == psutil.STATUS_ZOMBIE)
    assert "without authentication" in worker.stderr.read()


def test_fedrun_worker_rejects_a_port_the_binary_would_wrap() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "fedrun", "worker", "--port", "70000"],
        capture_output=True,
        text=True,
        env=env_with_repo_on_path(),
    )

    assert finished.returncode == 2
    assert "port must be between 1 and 65535" in finished.stderr


def test_dead_worker_is_not_alive_and_replace_waits_for_its_return() -> None:
    port = free_port()
    worker = start_fedrun_worker(port)
    backend = _static(f"127.0.0.1:{port}", ready_timeout_s=1.0, probe_timeout_s=1.0)
    try:
        (started,) = backend.start(1)
        stop_fedrun_worker(worker)

        began = time.monotonic()
        assert not backend.is_alive("static-0")
        assert time.monotonic() - began < 3.0  # bounded by probe_timeout_s
        with pytest.raises(WorkerError, match="is unreachable.*restart it there"):
            backend.replace("static-0")

        worker = start_fedrun_worker(port)  # its operator restarts it at the same address
        assert backend.replace("static-0") == started
        assert backend.is_alive("static-0")
    finally:
        backend.stop()
        stop_fedrun_worker(worker)


def test_liveness_checks_leave_the_workers_log_alone(tmp_path: Path) -> None:
    # The dispatcher asks every half second during a round; GetExecutor would log two errors each.
    port = free_port()
    with open(tmp_path / "worker.log", "w") as log:
        worker = start_fedrun_worker(port, stderr=log)
    backend = _static(f"127.0.0.1:{port}")
    try:
        backend.start(1)
        time.sleep(0.5)  # let start-up and the start() probe finish writing
        before = (tmp_path / "worker.log").read_text()

        assert all(backend.is_alive("static-0") for _ in range(10))
        time.sleep(0.5)
        assert (tmp_path / "worker.log").read_text() == before
    finally:
        backend.stop()
        stop_fedrun_worker(worker)


def test_registry_builds_the_static_backend() -> None:
    backend = create_backend(
        ClusterSettings(WorkerSettings(backend="static", count=1, addresses="127.0.0.1:8000"))
    )

    assert isinstance(backend, StaticBackend)
    assert backend.capabilities.starts_workers is False


def test_config_needs_one_address_per_worker() -> None:
    with pytest.raises(FedrunError, match="one worker per address.*lists 2, workers is 3"):
        flat_config(backend="static", workers=3, worker_addresses="a:1, b:2", allow_remote_workers=True)
    config = flat_config(backend="static", workers=2, worker_addresses="a:1, b:2", allow_remote_workers=True)
    assert config.workers.address_list == ("a:1", "b:2")


def test_probing_workers_does_not_import_tensorflow() -> None:
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, grpc, cluster.static.backend as s; "
            "from cluster.static.probe import probe_executor; "
            "probe_executor(grpc.insecure_channel('127.0.0.1:9'), 0.5); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tensorflow_federated'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env_with_repo_on_path(),
    ).stdout

    assert imported.strip() == "[]"


def test_fedrun_run_trains_on_fedrun_workers(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    workers = [start_fedrun_worker(port) for port in ports]
    try:
        finished = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedrun",
                "run",
                "--backend",
                "static",
                "--workers",
                "2",
                "--worker-addresses",
                ",".join(f"127.0.0.1:{port}" for port in ports),
                "--rounds",
                "1",
                "--clients-per-round",
                "6",
                "--epochs",
                "1",
                "--population",
                "60",
                "--eval-every",
                "0",
                "--no-progress",
                "--out",
                str(tmp_path / "run"),
            ],
            capture_output=True,
            text=True,
            env=env_with_repo_on_path(),
        )
        assert finished.returncode == 0, finished.stderr
        (record,) = [
            json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()
        ]
        assert {shard["worker"] for shard in record["shards"]} == {"static-0", "static-1"}
        assert record["train"]["num_examples"] > 0
        assert all(worker.poll() is None for worker in workers)  # fedrun stopped none of them
    finally:
        for worker in workers:
            stop_fedrun_worker(worker)


def test_the_backend_documents_itself() -> None:
    # Its docstring once followed a class attribute, which left the class without one.
    assert StaticBackend.__doc__ and "fixed addresses" in StaticBackend.__doc__
