"""One contract, every worker backend: what the coordinator relies on, with real workers.

"ray" runs on a real private Ray that the backend itself starts on this machine and shuts down;
"static" reaches real `fedrun worker` processes that the test starts as someone else would (pods),
and restarts one when a test kills it, as a StatefulSet would.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from cluster import ClusterSettings, WorkerBackend, WorkerError, WorkerSettings, create_backend
from tests.support.backends import CONFIG, ExternalWorkers, running, started_processes
from tests.support.configs import flat_config
from tests.support.runs import max_weight_difference, run_coordinator
from tests.support.waiting import eventually, grpc_ready, live_descendants

pytestmark = pytest.mark.timeout(300)

BACKENDS = ["local", "ray", "static"]


@dataclasses.dataclass
class BackendUnderTest:
    backend: WorkerBackend
    # Brings a killed worker back where the backend cannot: someone else restarts static workers.
    restart_killed: Callable[[str], None] = lambda target: None


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    yield
    leftovers = started_processes()
    for process in leftovers:  # so one failure does not spill into the next test
        process.kill()
    assert not leftovers, f"left running: {[process.cmdline()[:2] for process in leftovers]}"


@pytest.fixture(params=BACKENDS)
def under_test(request: pytest.FixtureRequest) -> Iterator[BackendUnderTest]:
    if request.param != "static":
        backend = create_backend(ClusterSettings(WorkerSettings(backend=request.param)))
        yield BackendUnderTest(backend)
        backend.stop()
        return
    external = ExternalWorkers(2)  # the "pods" of someone else, which this fixture starts
    try:
        backend = create_backend(
            ClusterSettings(WorkerSettings(backend="static", addresses=external.addresses))
        )
        yield BackendUnderTest(backend, external.restart)
        backend.stop()
    finally:
        external.stop()


@pytest.fixture
def backend(under_test: BackendUnderTest) -> WorkerBackend:
    return under_test.backend


def test_start_gives_ready_workers_and_stop_ends_every_process(backend: WorkerBackend) -> None:
    before = {process.pid for process in live_descendants()}
    workers = backend.start(2)

    assert len({worker.worker_id for worker in workers}) == len({worker.target for worker in workers}) == 2
    assert backend.workers() == workers
    for worker in workers:
        assert backend.is_alive(worker.worker_id)
        assert grpc_ready(worker.target)
    with pytest.raises(WorkerError, match="stop"):
        backend.start(1)
    everything_started = [process for process in live_descendants() if process.pid not in before]

    backend.stop()
    backend.stop()

    # Ray's own daemons and worker processes included, even those that outlive their parent.
    assert not [process.cmdline()[:2] for process in everything_started if running(process)]
    assert backend.workers() == []
    with pytest.raises(WorkerError, match="not started"):
        backend.is_alive(workers[0].worker_id)


def test_rounds_equal_single_process_tff(
    backend: WorkerBackend, source, algorithm, reference, tmp_path: Path
) -> None:
    config = flat_config(CONFIG, workers=2, shards=3)
    workers = backend.start(config.workers.count)

    state, rounds = run_coordinator(config, source, algorithm, tmp_path, backend)

    reference_state, reference_metrics = reference
    assert max_weight_difference(state, reference_state) <= 1e-5
    assert max(float(np.max(np.abs(w))) for w in state.global_model_weights.trainable) > 1e-3
    assert [r["train"]["num_examples"] for r in rounds] == [m["num_examples"] for m in reference_metrics]
    for record, expected in zip(rounds, reference_metrics):
        assert record["train"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert record["failures"] == []
        assert {shard["worker"] for shard in record["shards"]} <= {worker.worker_id for worker in workers}


def test_killed_worker_is_not_alive_and_replace_gives_a_fresh_one(under_test: BackendUnderTest) -> None:
    backend = under_test.backend
    victim, survivor = backend.start(2)
    binaries = [process for process in started_processes() if "worker_binary" in process.name()]
    assert len(binaries) == 2
    served_before = {process.pid for process in binaries}

    os.kill(binary_serving(victim.target, binaries).pid, signal.SIGKILL)

    assert eventually(lambda: not backend.is_alive(victim.worker_id), timeout_s=5)
    assert backend.is_alive(survivor.worker_id)
    under_test.restart_killed(victim.target)
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
            if any(
                c.laddr.port == port and c.status == psutil.CONN_LISTEN
                for c in binary.net_connections(kind="tcp")
            ):
                return binary
    raise AssertionError(f"no worker_binary serves {target}")
