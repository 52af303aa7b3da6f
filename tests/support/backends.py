"""What the backend tests share: the processes a backend may start, workers "someone else" runs
for the static backend (real `fedrun worker` processes on fixed ports, as pods would be), and the
small workload the contract suite trains."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import psutil
import pytest

from fedrun.data.source import ClientDataSource
from fedrun.data.synthetic import SyntheticDigits
from fedrun.learning.algorithm import FederatedAlgorithm, algorithm_for
from tests.support.configs import flat_config
from tests.support.runs import reference_run
from tests.support.waiting import env_with_repo_on_path, grpc_ready, live_descendants

# What a worker backend may start: TFF's binary, and Ray's daemons and worker processes.
STARTED_PROCESS_NAMES = ("worker_binary", "raylet", "gcs_server", "ray::")
CONFIG = flat_config(rounds=3, clients_per_round=10, epochs=2, population=200, eval_every=0, progress=False)


def started_processes() -> list[psutil.Process]:
    """Worker binaries and Ray processes under this test process."""
    found = []
    for process in live_descendants():
        try:
            if any(
                name in f"{process.name()} {' '.join(process.cmdline())}" for name in STARTED_PROCESS_NAMES
            ):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_fedrun_worker(port: int, stderr=subprocess.DEVNULL) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "fedrun", "worker", "--port", str(port)],
        stderr=stderr,
        text=True,
        env=env_with_repo_on_path(),
    )
    ready = grpc_ready(f"127.0.0.1:{port}")
    assert ready, f"fedrun worker did not start on port {port} (exit status {worker.poll()})"
    return worker


def stop_fedrun_worker(worker: subprocess.Popen[str]) -> None:
    worker.terminate()
    worker.wait(timeout=10)


class ExternalWorkers:
    """`fedrun worker` processes that the static backend reaches but did not start."""

    def __init__(self, count: int):
        self.ports = [free_port() for _ in range(count)]
        self._workers = {port: start_fedrun_worker(port) for port in self.ports}

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def restart(self, target: str) -> None:
        """What a StatefulSet does for a pod whose worker died: a new one at the same address."""
        port = int(target.rsplit(":", 1)[1])
        self._workers[port].kill()
        self._workers[port].wait(timeout=10)
        self._workers[port] = start_fedrun_worker(port)

    def stop(self) -> None:
        for worker in self._workers.values():
            stop_fedrun_worker(worker)


# The workload, its algorithm and its single-process TFF reference, computed once per module
# that imports these fixtures.
@pytest.fixture(scope="module")
def source() -> ClientDataSource:
    return SyntheticDigits(population=CONFIG.data.population)


@pytest.fixture(scope="module")
def algorithm(source: ClientDataSource) -> FederatedAlgorithm:
    return algorithm_for(CONFIG, source)


@pytest.fixture(scope="module")
def reference(algorithm: FederatedAlgorithm, source: ClientDataSource) -> tuple[Any, list[dict]]:
    return reference_run(CONFIG, source, algorithm)
