"""One contract, every worker backend: what the coordinator relies on, with real workers.

"ray" runs on a real private Ray that the backend itself starts on this machine and shuts down.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from cluster import WorkerBackend, WorkerError, create_backend
from fedrun.config import RunConfig
from fedrun.data.source import ClientDataSource
from fedrun.data.synthetic import SyntheticDigits
from fedrun.learning import FederatedAlgorithm, algorithm_for
from tests.coordinator_runs import max_weight_difference, reference_run, run_coordinator
from tests.integration.test_local_backend import _eventually as eventually
from tests.integration.test_local_backend import _grpc_ready as grpc_ready
from tests.integration.test_local_backend import _live_descendants as live_descendants

pytestmark = pytest.mark.timeout(300)

BACKENDS = ["local", "ray"]
# What a worker backend may start: TFF's binary, and Ray's daemons and worker processes.
STARTED_PROCESS_NAMES = ("worker_binary", "raylet", "gcs_server", "ray::")
CONFIG = RunConfig(rounds=3, clients_per_round=10, epochs=2, population=200, eval_every=0, progress=False)


def started_processes() -> list[psutil.Process]:
    """Worker binaries and Ray processes under this test process."""
    found = []
    for process in live_descendants():
        try:
            if any(name in f"{process.name()} {' '.join(process.cmdline())}" for name in STARTED_PROCESS_NAMES):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    yield
    leftovers = started_processes()
    for process in leftovers:  # so one failure does not spill into the next test
        process.kill()
    assert not leftovers, f"left running: {[process.cmdline()[:2] for process in leftovers]}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[WorkerBackend]:
    backend = create_backend(request.param)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def source() -> ClientDataSource:
    return SyntheticDigits(population=CONFIG.population)


@pytest.fixture(scope="module")
def algorithm(source: ClientDataSource) -> FederatedAlgorithm:
    return algorithm_for(CONFIG, source)


@pytest.fixture(scope="module")
def reference(algorithm: FederatedAlgorithm, source: ClientDataSource) -> tuple[Any, list[dict]]:
    return reference_run(CONFIG, source, algorithm)


def test_start_gives_ready_workers_and_stop_ends_every_process(backend: WorkerBackend) -> None:
    workers = backend.start(2)

    assert len({worker.worker_id for worker in workers}) == len({worker.target for worker in workers}) == 2
    assert backend.workers() == workers
    for worker in workers:
        assert backend.is_alive(worker.worker_id)
        assert grpc_ready(worker.target)
    with pytest.raises(WorkerError, match="stop"):
        backend.start(1)
    everything_started = live_descendants()

    backend.stop()
    backend.stop()

    # Ray's own daemons and worker processes included, even those that outlive their parent.
    assert not [process.cmdline()[:2] for process in everything_started if running(process)]
    assert backend.workers() == []
    with pytest.raises(WorkerError, match="not started"):
        backend.is_alive(workers[0].worker_id)


def test_rounds_equal_single_process_tff(backend: WorkerBackend, source, algorithm, reference,
                                         tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, workers=2, shards=3)
    workers = backend.start(config.workers)

    state, rounds = run_coordinator(config, source, algorithm, tmp_path, backend)

    reference_state, reference_metrics = reference
    assert max_weight_difference(state, reference_state) <= 1e-5
    assert max(float(np.max(np.abs(w))) for w in state.global_model_weights.trainable) > 1e-3
    assert [r["train"]["num_examples"] for r in rounds] == [m["num_examples"] for m in reference_metrics]
    for record, expected in zip(rounds, reference_metrics):
        assert record["train"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert record["failures"] == []
        assert {shard["worker"] for shard in record["shards"]} <= {worker.worker_id for worker in workers}


def test_killed_worker_is_not_alive_and_replace_gives_a_fresh_one(backend: WorkerBackend) -> None:
    victim, survivor = backend.start(2)
    binaries = [process for process in started_processes() if "worker_binary" in process.name()]
    assert len(binaries) == 2
    served_before = {process.pid for process in binaries}

    os.kill(binary_serving(victim.target, binaries).pid, signal.SIGKILL)

    assert eventually(lambda: not backend.is_alive(victim.worker_id), timeout_s=5)
    assert backend.is_alive(survivor.worker_id)
    fresh = backend.replace(victim.worker_id)
    assert fresh.worker_id == victim.worker_id
    assert backend.is_alive(fresh.worker_id)
    assert grpc_ready(fresh.target)
    assert backend.workers() == [fresh, survivor]
    binaries_now = {p.pid for p in started_processes() if "worker_binary" in p.name()}
    assert len(binaries_now) == 2 and len(binaries_now - served_before) == 1


def binary_serving(target: str, binaries: list[psutil.Process]) -> psutil.Process:
    """The worker_binary behind a target: by its TCP port, or the one a Unix socket's process runs."""
    if target.startswith("unix:"):
        path = target.removeprefix("unix:")
        for binary in binaries:
            launcher = binary.parent()
            if launcher is not None and path in " ".join(launcher.cmdline()):
                return binary
    else:
        port = int(target.rsplit(":", 1)[1])
        for binary in binaries:
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in binary.net_connections(kind="tcp")):
                return binary
    raise AssertionError(f"no worker_binary serves {target}")
