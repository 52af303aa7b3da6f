"""The Ray backend on real Ray: a local Ray with declared GPUs, and a multi-node cluster.

The cluster (ray.cluster_utils) runs several raylets on this machine, each a node with its own
resources; fedrun joins it by address, as it would a real one. This machine has no GPU: the GPUs
below are declared to Ray (num_gpus), which is enough to test the request path and the
CUDA_VISIBLE_DEVICES each worker's binary gets, not GPU computation.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import ray
from ray.cluster_utils import Cluster

from cluster import Slowdown, Worker, WorkerStartError
from cluster.local.options import LocalWorkerOptions
from cluster.ray.backend import RayBackend
from cluster.ray.options import RayWorkerOptions
from fedrun.data.synthetic import SyntheticDigits
from fedrun.learning.algorithm import algorithm_for
from fedrun.loop.run_dir import RoundsFile
from tests.support.backends import CONFIG, running, started_processes
from tests.support.configs import flat_config
from tests.support.processes import SMALL, fedrun
from tests.support.runs import max_weight_difference, run_coordinator
from tests.support.waiting import eventually, grpc_ready

pytestmark = pytest.mark.timeout(300)

_QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


@dataclasses.dataclass
class RayTestCluster:
    cluster: Cluster
    nodes: dict[str, object]  # name -> ray._private.node.Node

    @property
    def address(self) -> str:
        return self.cluster.address

    def name_of(self, node_id: str) -> str:
        return next(name for name, node in self.nodes.items() if node.node_id == node_id)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    """A head that runs no workers (0 CPUs) and two worker nodes with 1 CPU and 1 declared GPU."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _QUIET_RAY.items():
            patch.setenv(name, value)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            nodes = {
                "a": cluster.add_node(num_cpus=1, num_gpus=1, resources={"zone_a": 1}),
                "b": cluster.add_node(num_cpus=1, num_gpus=1),
            }
            yield RayTestCluster(cluster, nodes)
        finally:
            cluster.shutdown()
    assert not started_processes(), "the test cluster left Ray processes running"


def options(cluster: RayTestCluster, **fields) -> RayWorkerOptions:
    return RayWorkerOptions(address=cluster.address, **fields)


def binaries() -> list[psutil.Process]:
    return [process for process in started_processes() if process.name() == "worker_binary"]


def node_id_of(binary: psutil.Process) -> str:
    """The Ray node a binary runs on: binary <- its actor <- that node's raylet."""
    raylet = binary.parent().parent()
    assert raylet.name() == "raylet"
    return next(arg.split("=", 1)[1] for arg in raylet.cmdline() if arg.startswith("--node_id="))


def port_of(binary: psutil.Process) -> int:
    (port,) = {c.laddr.port for c in binary.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    return port


def actor_pids() -> set[int]:
    return {process.pid for process in started_processes() if process.name().startswith("ray::WorkerActor")}


def binary_of(worker: Worker) -> psutil.Process:
    port = int(worker.target.rsplit(":", 1)[1])
    return next(binary for binary in binaries() if port_of(binary) == port)


def fedrun_placement_group_states() -> list[str]:
    return [
        group["state"]
        for group in ray.util.placement_group_table().values()
        if group["name"].startswith("fedrun-")
    ]


def test_ray_is_imported_only_by_the_ray_backend_and_the_actor_imports_no_tensorflow() -> None:
    # Ray stays optional; TensorFlow would stretch each actor's start from ~1 s to ~7 s.
    script = (
        "import sys, cluster, cluster.ray.options; ray_before = 'ray' in sys.modules; "
        "import cluster.ray.actor; print(ray_before, sorted({m.split('.')[0] for m in sys.modules} "
        "& {'tensorflow', 'tensorflow_federated', 'fedrun'}))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout

    assert imported.strip() == "False []"


def test_local_ray_with_declared_gpus_gives_each_worker_its_own(tmp_path: Path) -> None:
    # The test starts the Ray (two declared GPUs); the backend uses this process's connection.
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _QUIET_RAY.items():
            patch.setenv(name, value)
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    try:
        with RayBackend(RayWorkerOptions(cpus=0.5, gpus=1)) as backend:
            workers = backend.start(2)
            assert all(
                worker.target.startswith("127.0.0.1:") and grpc_ready(worker.target) for worker in workers
            )
            assert sorted(binary.environ()["CUDA_VISIBLE_DEVICES"] for binary in binaries()) == ["0", "1"]
        with pytest.raises(WorkerStartError, match=r"asks for GPU=3, but the cluster has GPU=2"):
            RayBackend(RayWorkerOptions(cpus=0.5, gpus=1)).start(3)
        assert ray.is_initialized()  # not the backend's connection: not its to end
        assert not binaries()
    finally:
        ray.shutdown()


def test_spread_puts_one_worker_on_each_node(cluster: RayTestCluster) -> None:
    backend = RayBackend(options(cluster, placement_strategy="SPREAD", gpus=1))
    try:
        workers = backend.start(2)
        running_binaries = binaries()

        assert sorted(cluster.name_of(node_id_of(binary)) for binary in running_binaries) == ["a", "b"]
        node_ips = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        expected = {f"{node_ips[node_id_of(binary)]}:{port_of(binary)}" for binary in running_binaries}
        assert {worker.target for worker in workers} == expected
        for binary in running_binaries:
            # Each node's one declared GPU, and the flags and thread limits of a local worker.
            assert binary.environ()["CUDA_VISIBLE_DEVICES"] == "0"
            assert binary.environ()["TF_NUM_INTRAOP_THREADS"] == "1"
            assert binary.environ()["TF_NUM_INTEROP_THREADS"] == "2"
            assert "--max_concurrent_computation_calls=2" in binary.cmdline()
        assert fedrun_placement_group_states().count("CREATED") == 1
    finally:
        backend.stop()

    assert not ray.is_initialized()
    assert eventually(lambda: not actor_pids(), timeout_s=10)  # Ray ends killed actors' processes
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        # The cluster runs on; what fedrun made in it is gone.
        assert sum(node["Alive"] for node in ray.nodes()) == 3
        assert set(fedrun_placement_group_states()) == {"REMOVED"}
    finally:
        ray.shutdown()


def test_custom_resource_places_the_worker_on_the_node_that_has_it(cluster: RayTestCluster) -> None:
    with RayBackend(options(cluster, resources={"zone_a": 1})) as backend:
        backend.start(1)

        assert [cluster.name_of(node_id_of(binary)) for binary in binaries()] == ["a"]


@pytest.mark.parametrize(
    ("fields", "workers", "message"),
    [
        ({"cpus": 0.5, "gpus": 1}, 3, r"3 workers x GPU=1 asks for GPU=3, but the cluster has GPU=2 in all"),
        ({"resources": {"tpu": 1}}, 1, r"asks for tpu=1, but the cluster has tpu=0"),
        ({"placement_strategy": "STRICT_PACK"}, 2, r"STRICT_PACK puts all 2 workers on one node"),
    ],
    ids=["more GPUs", "missing resource", "STRICT_PACK"],
)
def test_request_the_cluster_cannot_hold_fails_before_any_worker_starts(
    cluster: RayTestCluster, fields: dict, workers: int, message: str
) -> None:
    actors_before = actor_pids()  # some of an earlier test's may still be ending
    began = time.monotonic()

    with pytest.raises(WorkerStartError, match=message):
        RayBackend(options(cluster, **fields)).start(workers)

    assert time.monotonic() - began < 15
    assert not ray.is_initialized()
    assert actor_pids() <= actors_before


def test_resources_held_by_other_work_time_out_within_ready_timeout(cluster: RayTestCluster) -> None:
    with RayBackend(options(cluster, placement_strategy="SPREAD")) as holder:
        holder.start(2)  # every worker CPU of the cluster
        # Same process, so the same connection: an empty address uses it.
        waiting = RayBackend(
            RayWorkerOptions(process=LocalWorkerOptions(ready_timeout_s=2, isolation="none"))
        )
        began = time.monotonic()

        with pytest.raises(WorkerStartError, match="other work holds it"):
            waiting.start(1)

        assert time.monotonic() - began < 10
        assert ray.is_initialized() and all(holder.is_alive(w.worker_id) for w in holder.workers())


def test_a_slowed_ray_worker_is_throttled_on_its_node(cluster: RayTestCluster, tmp_path: Path) -> None:
    """--slow-worker on Ray: the actor slows its own binary, on the node where it runs."""
    process = LocalWorkerOptions(isolation="none", slow_mechanism="duty-cycle")
    slow = options(cluster, placement_strategy="SPREAD", process=process, slow={"ray-1": 4.0})
    with RayBackend(slow) as backend:
        workers = backend.start(2)
        assert backend.slowdowns() == {
            "ray-1": Slowdown(4.0, "stop/continue duty cycle on the worker's Ray node")
        }
        slowed = binary_of(workers[1])
        assert eventually(lambda: slowed.status() == psutil.STATUS_STOPPED, timeout_s=3)
        assert binary_of(workers[0]).status() != psutil.STATUS_STOPPED
        source = SyntheticDigits(population=CONFIG.data.population)
        _, rounds = run_coordinator(CONFIG, source, algorithm_for(CONFIG, source), tmp_path, backend=backend)
    per_example = {
        worker: np.mean(
            [
                (s["end"] - s["start"]) / s["examples"]
                for r in rounds[1:]
                for s in r["shards"]
                if s["worker"] == worker
            ]
        )
        for worker in ("ray-0", "ray-1")
    }
    assert per_example["ray-1"] > 2 * per_example["ray-0"]
    assert rounds[-1]["slowed"]["ray-1"]["factor"] == 4.0


def test_killed_actor_takes_its_binary_down(cluster: RayTestCluster) -> None:
    with RayBackend(options(cluster, placement_strategy="SPREAD")) as backend:
        victim, survivor = backend.start(2)
        binary = binary_of(victim)

        binary.parent().send_signal(signal.SIGKILL)  # the actor's process, not the binary

        assert eventually(lambda: not running(binary), timeout_s=5)
        assert eventually(lambda: not backend.is_alive(victim.worker_id), timeout_s=5)
        assert backend.is_alive(survivor.worker_id)
        fresh = backend.replace(victim.worker_id)
        assert backend.is_alive(fresh.worker_id) and grpc_ready(fresh.target)


def test_fedrun_run_joins_the_cluster_by_address(cluster: RayTestCluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        fedrun(
            "run",
            *SMALL,
            "--backend",
            "ray",
            "--ray-address",
            cluster.address,
            "--placement-strategy",
            "SPREAD",
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stderr
    rounds = [r.to_json() for r in RoundsFile(out / "rounds.jsonl").read()]
    assert len(rounds) == 2 and all(r["failures"] == [] for r in rounds)
    assert {shard["worker"] for r in rounds for shard in r["shards"]} == {"ray-0", "ray-1"}
    assert not (out / "workers").exists()  # on a cluster, worker logs stay on their nodes


def test_fedrun_run_reports_more_gpus_than_the_cluster_has_before_any_round(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        fedrun(
            "run",
            *SMALL,
            "--backend",
            "ray",
            "--ray-address",
            cluster.address,
            "--workers",
            "3",
            "--worker-cpus",
            "0.5",
            "--worker-gpus",
            "1",
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 2
    assert "3 workers x GPU=1 asks for GPU=3, but the cluster has GPU=2" in result.stderr
    assert "Traceback" not in result.stderr
    rounds_file = out / "rounds.jsonl"
    assert not rounds_file.exists() or RoundsFile(rounds_file).read() == []


def test_node_lost_mid_run_is_a_dead_worker_whose_shards_run_again(
    cluster: RayTestCluster, source, algorithm, reference, tmp_path: Path
) -> None:
    # Last in this module: it removes a node for good.
    config = flat_config(CONFIG, workers=2, shards=4)
    with RayBackend(options(cluster, placement_strategy="SPREAD")) as backend:
        workers = backend.start(config.workers.count)
        # Not the node this process's Ray connection goes through: removing that one ends it.
        driver_node = ray.get_runtime_context().get_node_id()
        lost_node = next(name for name in ("b", "a") if cluster.nodes[name].node_id != driver_node)
        lost = next(w for w in workers if cluster.name_of(node_id_of(binary_of(w))) == lost_node)
        coordinator = concurrent.futures.ThreadPoolExecutor(1)
        # Without replace: the lost worker's slot is dropped and its shards run on the other.
        run = coordinator.submit(run_coordinator, config, source, algorithm, tmp_path, backend, replace=False)
        rounds_file = tmp_path / "rounds.jsonl"
        assert eventually(
            lambda: rounds_file.exists() and rounds_file.read_text().count("\n") >= 1, timeout_s=120
        )

        cluster.cluster.remove_node(cluster.nodes.pop(lost_node))

        assert eventually(lambda: not backend.is_alive(lost.worker_id), timeout_s=10)
        state, rounds = run.result(timeout=180)
        coordinator.shutdown()
        failures = [failure for record in rounds for failure in record["failures"]]
        assert failures and {failure["worker"] for failure in failures} == {lost.worker_id}
        assert max_weight_difference(state, reference[0]) <= 1e-5
        # Ray re-reserves the lost bundle once a node can hold it; replace() starts a worker there.
        cluster.nodes["c"] = cluster.cluster.add_node(num_cpus=1)
        fresh = backend.replace(lost.worker_id)
        assert grpc_ready(fresh.target) and cluster.name_of(node_id_of(binary_of(fresh))) == "c"
