"""Isolated local workers: reachable through a private Unix socket, from no network address.

Real `unshare`, forwarder and worker_binary processes. The exposed (isolation="none") worker is
tested the same way, to show the checks do catch a listening worker.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from cluster import LocalProcessBackend, LocalWorkerOptions, WorkerStartError, backend_options
from cluster.local.netns import namespaces_unavailable
from cluster.local.ports import listening_ports, parse_listening_sockets, socket_inodes
from fedrun.config import RunConfig
from fedrun.errors import FedrunError
from tests.support.configs import flat_config
from tests.support.processes import fake_binary
from tests.support.waiting import env_with_repo_on_path, eventually, gone, grpc_ready, live_descendants

pytestmark = pytest.mark.timeout(300)

ISOLATED = LocalWorkerOptions(isolation="netns")


@pytest.fixture
def isolated() -> Iterator[LocalProcessBackend]:
    backend = LocalProcessBackend(ISOLATED)
    yield backend
    backend.stop()


def _role(process: psutil.Process) -> str:
    command = process.cmdline()
    if process.name() == "unshare":
        return "unshare"
    if "cluster.local.isolated_worker" in command:
        return "forwarder"
    return "worker" if Path(command[0]).name == "worker_binary" else "other"


def _processes(role: str) -> list[psutil.Process]:
    return [process for process in live_descendants() if _role(process) == role]


def _host_listening_inodes() -> set[int]:
    """Listening TCP sockets of this test's network namespace, the machine's own."""
    tables = [Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6")]
    return {
        inode for table in tables if table.exists() for inode in parse_listening_sockets(table.read_text())
    }


def _non_loopback_addresses() -> list[tuple]:
    """(family, sockaddr) of every address of this machine that is not loopback."""
    found = []
    for interface, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            host = address.address
            if ipaddress.ip_address(host.split("%")[0]).is_loopback:
                continue
            if ipaddress.ip_address(host.split("%")[0]).is_link_local and "%" not in host:
                host = f"{host}%{interface}"  # a link-local address needs its interface
            info = socket.getaddrinfo(host, None, address.family, socket.SOCK_STREAM)[0]
            found.append((address.family, info[4]))
    return found


def _connects(family: int, sockaddr: tuple, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(2.0)
        try:
            client.connect((sockaddr[0], port, *sockaddr[2:]))
        except OSError:
            return False
    return True


def test_namespaces_work_on_this_machine() -> None:
    # The isolation tests below mean something only where `unshare` works, as on this project's
    # machines and CI; elsewhere "auto" falls back (tested further down).
    assert namespaces_unavailable() is None


def test_isolated_worker_listens_on_no_address_of_the_machine(isolated: LocalProcessBackend) -> None:
    isolated.start(2)
    workers = _processes("worker")
    addresses = _non_loopback_addresses()
    assert len(workers) == 2 and addresses

    host_listening = _host_listening_inodes()
    for worker in workers:
        (inner_port,) = listening_ports(worker.pid)  # it listens, but in its own namespace
        assert not socket_inodes(worker.pid) & host_listening
        for family, sockaddr in addresses:
            assert not _connects(family, sockaddr, inner_port), (sockaddr, inner_port)
    for forwarder in _processes("forwarder"):
        assert not socket_inodes(forwarder.pid) & host_listening


def test_exposed_worker_is_reachable_on_the_machines_addresses() -> None:
    with LocalProcessBackend(LocalWorkerOptions(isolation="none")) as backend:
        (worker,) = backend.start(1)
        port = int(worker.target.rsplit(":", 1)[1])
        (process,) = _processes("worker")

        assert socket_inodes(process.pid) & _host_listening_inodes()
        assert all(_connects(family, sockaddr, port) for family, sockaddr in _non_loopback_addresses())


def test_socket_is_owner_only_in_an_owner_only_directory(isolated: LocalProcessBackend) -> None:
    (worker,) = isolated.start(1)
    path = Path(worker.target.removeprefix("unix:"))

    assert worker.target.startswith("unix:")
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_uid == path.parent.stat().st_uid == os.getuid()
    assert grpc_ready(worker.target)


def test_stop_leaves_no_process_and_no_socket(isolated: LocalProcessBackend) -> None:
    workers = isolated.start(2)
    pids = [process.pid for process in live_descendants()]
    assert (
        sorted(_role(psutil.Process(pid)) for pid in pids)
        == ["forwarder"] * 2 + ["unshare"] * 2 + ["worker"] * 2
    )

    isolated.stop()

    assert all(gone(pid) for pid in pids)
    assert not any(Path(w.target.removeprefix("unix:")).parent.exists() for w in workers)


def test_replace_gives_a_fresh_socket_and_ends_the_old_namespace(isolated: LocalProcessBackend) -> None:
    old, untouched = isolated.start(2)
    old_pids = [
        p.pid for p in live_descendants() if old.target.removeprefix("unix:") in " ".join(p.cmdline())
    ]
    assert len(old_pids) == 2  # unshare and forwarder carry the socket path

    fresh = isolated.replace("local-0")

    assert fresh.target != old.target and grpc_ready(fresh.target)
    assert all(gone(pid) for pid in old_pids)
    assert not _unix_socket_accepts(Path(old.target.removeprefix("unix:")))
    assert isolated.workers() == [fresh, untouched]


def _unix_socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("victim", ["worker", "forwarder"])
def test_killing_worker_or_forwarder_ends_the_whole_namespace(
    isolated: LocalProcessBackend, victim: str
) -> None:
    isolated.start(1)
    (process,) = _processes(victim)

    process.kill()

    assert eventually(lambda: not isolated.is_alive("local-0"))
    assert eventually(lambda: not _processes("worker") and not _processes("forwarder"))
    assert isolated.is_alive(isolated.replace("local-0").worker_id)


_COORDINATOR = """
import sys, time
from pathlib import Path
import psutil
from cluster import LocalProcessBackend, LocalWorkerOptions
LocalProcessBackend(LocalWorkerOptions(log_dir=Path(sys.argv[1]), isolation="netns")).start(2)
print(*(child.pid for child in psutil.Process().children(recursive=True)), flush=True)
time.sleep(600)
"""


def test_sigkilled_coordinator_takes_unshare_forwarder_and_worker_down(tmp_path: Path) -> None:
    coordinator = subprocess.Popen(
        [sys.executable, "-c", _COORDINATOR, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env_with_repo_on_path(),
    )
    pids: list[int] = []
    try:
        assert coordinator.stdout is not None
        pids = [int(pid) for pid in coordinator.stdout.readline().split()]
        assert (
            sorted(_role(psutil.Process(pid)) for pid in pids)
            == ["forwarder"] * 2 + ["unshare"] * 2 + ["worker"] * 2
        )

        coordinator.kill()
        coordinator.wait()

        assert eventually(lambda: all(gone(pid) for pid in pids), timeout_s=5.0)
    finally:
        coordinator.kill()
        coordinator.wait()
        for pid in pids:  # orphans are no longer our descendants: clean up by pid
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_worker_exiting_during_startup_quotes_its_log(tmp_path: Path) -> None:
    failing = fake_binary(tmp_path, "echo 'fake worker: unknown flag' >&2\nexit 3")
    backend = LocalProcessBackend(LocalWorkerOptions(binary=failing, isolation="netns"))

    with pytest.raises(WorkerStartError, match="exit code 3") as error:
        backend.start(1)
    assert "fake worker: unknown flag" in str(error.value)
    assert "worker exited with exit code 3" in str(error.value)  # the forwarder's own account


def test_hung_isolated_worker_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    hung = fake_binary(tmp_path, "sleep 600")
    backend = LocalProcessBackend(LocalWorkerOptions(binary=hung, ready_timeout_s=1.0, isolation="netns"))

    with pytest.raises(WorkerStartError, match="listen behind its Unix socket within ready_timeout_s"):
        backend.start(2)

    assert live_descendants() == []


def test_isolation_required_but_unavailable_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "cluster.local.backend.namespaces_unavailable", lambda: "user namespaces are disabled"
    )
    backend = LocalProcessBackend(ISOLATED)

    with pytest.raises(WorkerStartError, match='user namespaces are disabled.*isolation "none"'):
        backend.start(1)
    assert live_descendants() == []


def test_auto_without_namespaces_exposes_the_worker_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        "cluster.local.backend.namespaces_unavailable", lambda: "user namespaces are disabled"
    )

    with (
        caplog.at_level(logging.WARNING),
        LocalProcessBackend(LocalWorkerOptions(isolation="auto")) as backend,
    ):
        (worker,) = backend.start(1)

    assert worker.target.startswith("127.0.0.1:")
    assert "without authentication" in caplog.text and "user namespaces are disabled" in caplog.text


def test_auto_isolates_where_namespaces_work() -> None:
    with LocalProcessBackend() as backend:
        (worker,) = backend.start(1)

        assert worker.target.startswith("unix:")
        assert _processes("unshare")


def test_invalid_isolation_names_the_choices() -> None:
    with pytest.raises(ValueError, match="isolation must be one of auto, netns, none"):
        LocalWorkerOptions(isolation="firewall")  # type: ignore[arg-type]
    with pytest.raises(FedrunError, match="worker_isolation must be one of auto, netns, none"):
        flat_config(worker_isolation="firewall")


def test_worker_isolation_reaches_the_local_backend(tmp_path: Path) -> None:
    config = flat_config(worker_isolation="none")

    assert backend_options(config.cluster, tmp_path).isolation == "none"
    assert RunConfig().workers.isolation == "auto"


def _start_training(out: Path, isolation: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedrun",
            "run",
            "--workers",
            "2",
            "--rounds",
            "2",
            "--clients-per-round",
            "6",
            "--epochs",
            "1",
            "--population",
            "60",
            "--eval-every",
            "0",
            "--no-progress",
            "--worker-isolation",
            isolation,
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with_repo_on_path(),
    )


def _results(out: Path, isolation: str) -> tuple[list[np.ndarray], list[dict]]:
    with np.load(out / "model_weights.npz") as weights:
        arrays = [weights[name] for name in sorted(weights.files)]
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    logs = "".join(path.read_text() for path in (out / "workers").glob("*.log"))
    assert ("forwarding unix:" in logs) == (isolation == "netns")
    return arrays, rounds


def test_training_through_isolated_workers_equals_training_through_exposed_ones(tmp_path: Path) -> None:
    runs = {isolation: _start_training(tmp_path / isolation, isolation) for isolation in ("netns", "none")}
    for run in runs.values():
        _, errors = run.communicate(timeout=240)
        assert run.returncode == 0, errors
    isolated_weights, isolated_rounds = _results(tmp_path / "netns", "netns")
    exposed_weights, exposed_rounds = _results(tmp_path / "none", "none")

    assert max(float(np.max(np.abs(w))) for w in isolated_weights) > 1e-3  # it trained
    for ours, theirs in zip(isolated_weights, exposed_weights, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert [r["train"] for r in isolated_rounds] == pytest.approx([r["train"] for r in exposed_rounds])
