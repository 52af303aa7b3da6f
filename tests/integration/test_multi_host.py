"""fedrun across hosts, as far as one machine can show it: real `fedrun worker` and `fedrun run`
processes, each inside its own Linux network namespace, talking real gRPC over real veth links
joined by a bridge (itself in a namespace), with names resolved as a Kubernetes headless Service
gives them (worker-0.fedrun-workers). No second machine exists: the "hosts" share this kernel,
its CPUs and its files. Nothing is attached to the machine's own namespace, and a blackhole route
there keeps the test's subnet from ever leaving the machine.

A network split (iptables dropping all of one worker's traffic) must end like a dead worker on
the static backend: after a bounded wait for it to come back, the run names it, carries on
without it and finishes with the same model.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import netns
from tests.support.processes import assert_same_training, fedrun, json_lines, local_reference_run
from tests.support.waiting import env_with_repo_on_path

pytestmark = pytest.mark.timeout(300)

SUBNET = "10.250.0.0/24"
SERVICE = "fedrun-workers"  # the headless Service whose pods the workers stand in for
HOSTS = [
    netns.Host("coordinator", "10.250.0.2", ("coordinator", f"coordinator.{SERVICE}")),
    netns.Host("worker-0", "10.250.0.11", ("worker-0", f"worker-0.{SERVICE}")),
    netns.Host("worker-1", "10.250.0.12", ("worker-1", f"worker-1.{SERVICE}")),
]
WORKERS = ["worker-0", "worker-1"]
PORT = 8000
ADDRESSES = ",".join(f"{node}.{SERVICE}:{PORT}" for node in WORKERS)
RUN = "--clients-per-round 8 --epochs 1 --population 100 --eval-every 0 --no-progress --no-tensorboard"
RUN = RUN.split()
STATIC = ["--backend", "static", "--workers", "2", "--worker-addresses", ADDRESSES, "--allow-remote-workers"]
REPLACE_WAIT_S = 5  # --worker-start-timeout-s: how long a lost worker is waited for
WAIT_S = 180  # bounds every wait on a run
LOST_BOUND_S = 60  # a lost worker is given up within this


@pytest.fixture(scope="module")
def network() -> Iterator[netns.Network]:
    if reason := netns.unavailable_reason():
        pytest.skip(reason)
    netns.remove_orphans()
    with netns.blackhole_route(SUBNET):
        network = netns.Network(HOSTS)
        try:
            ours = _root_links()
            network.create()
            assert _root_links() == ours, "the test's network reached into the machine's own namespace"
            yield network
        finally:
            network.close()


@pytest.fixture
def workers(network: netns.Network, tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """`fedrun worker --port 8000` in each worker's namespace, ready to serve."""
    started = []
    try:
        for node in WORKERS:
            with open(tmp_path / f"{node}.log", "w") as log:
                command = fedrun("worker", "--port", str(PORT))
                started.append(network.popen(node, command, stderr=log, env=env_with_repo_on_path()))
        for node, worker in zip(WORKERS, started):
            _await_listening(network, node, worker)
        yield started
    finally:
        for worker in started:
            worker.terminate()
        for worker in started:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
        for node in WORKERS:  # the worker_binary children, if a fedrun worker died without them
            network.kill_processes(node)
            if shutil.which("iptables"):  # heal a split: the namespaces outlive this test
                network.run(node, ["iptables", "-F"], timeout=30)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same rounds on the local backend, in this (the machine's own) namespace."""
    return local_reference_run([*RUN, "--rounds", "3"], tmp_path_factory.mktemp("local"), WAIT_S)


def test_run_across_namespaces_equals_the_local_run(
    network: netns.Network, workers: list[subprocess.Popen[str]], local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    done = _run_coordinator(network, [*RUN, "--rounds", "3", *STATIC, "--out", str(out)], tmp_path)

    assert done.process.returncode == 0, done.stderr
    if not netns.other_routes(SUBNET):  # from the machine's own namespace, the subnet leads nowhere
        assert netns.ip("route", "get", HOSTS[1].address, check=False).returncode != 0
    assert "remote workers" in done.stderr and "without authentication" in done.stderr
    rounds, expected = json_lines(out / "rounds.jsonl"), json_lines(local_run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for record in rounds:
        assert {shard["worker"] for shard in record["shards"]} == {"static-0", "static-1"}
        assert record["failures"] == []
    assert_same_training(out, local_run, rounds, expected)
    assert all(worker.poll() is None for worker in workers)  # fedrun stopped neither


def _split(network: netns.Network, node: str) -> None:
    for chain in ("INPUT", "OUTPUT"):  # the host is cut off both ways: packets vanish, nothing answers
        split = network.run(node, ["iptables", "-A", chain, "-j", "DROP"], timeout=30)
        assert split.returncode == 0, split.stderr


def _kill(network: netns.Network, node: str) -> None:
    network.kill_processes(node)


NO_IPTABLES = "iptables is not installed (Debian: apt-get install iptables); the split needs it"


@pytest.mark.parametrize(
    "lose",
    [
        pytest.param(
            _split,
            id="network-split",
            marks=pytest.mark.skipif(not shutil.which("iptables"), reason=NO_IPTABLES),
        ),
        pytest.param(_kill, id="killed-worker"),
    ],
)
def test_a_split_off_worker_is_lost_like_a_dead_one(
    network: netns.Network,
    workers: list[subprocess.Popen[str]],
    local_run: Path,
    tmp_path: Path,
    lose: Callable[[netns.Network, str], None],
) -> None:
    out = tmp_path / "run"
    lost_wait = ["--worker-start-timeout-s", str(REPLACE_WAIT_S)]
    coordinator = Coordinator(
        network, [*RUN, "--rounds", "3", *STATIC, *lost_wait, "--out", str(out)], tmp_path
    )
    try:
        _await_rounds(out / "rounds.jsonl", 1, coordinator)
        lose(network, "worker-1")
        lost_at = time.monotonic()
        surfaced = _await_stderr(coordinator, "could not replace worker static-1") - lost_at
        coordinator.wait()
        finished = time.monotonic() - lost_at
    finally:
        coordinator.stop()

    # The static backend cannot restart a worker: it waits for it to come back, then the run
    # goes on without its slot, runs its shard again on worker-0, and finishes.
    stderr = coordinator.stderr
    assert coordinator.process.returncode == 0, stderr
    lost = f"could not replace worker static-1: worker static-1 at worker-1.{SERVICE}:{PORT} is unreachable"
    assert lost in stderr and f"--worker-start-timeout-s={REPLACE_WAIT_S:g} s" in stderr
    assert "restart it there" in stderr and "Traceback" not in stderr
    rounds = json_lines(out / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    failures = [f for r in rounds for f in r["failures"]]
    assert failures and all(f["worker"] == "static-1" and not f["replaced"] for f in failures)
    assert rounds[-1]["workers"] == 1 and {s["worker"] for s in rounds[-1]["shards"]} == {"static-0"}
    assert workers[0].poll() is None
    assert_same_training(out, local_run, rounds, json_lines(local_run / "rounds.jsonl"))
    # Found by the liveness probe (5 s) and given up after the wait for its return, not after
    # --rpc-timeout-s (600 s): the generous bound is for a busy machine.
    assert surfaced < LOST_BOUND_S
    print(
        f"{lose.__name__}: worker-1 given up {surfaced:.1f} s after it was lost, run done at {finished:.1f} s"
    )


class Coordinator:
    """`fedrun run ARGV` in the coordinator's namespace; its output goes to files, not pipes."""

    def __init__(self, network: netns.Network, argv: list[str], logs: Path) -> None:
        self._stderr = logs / "coordinator.stderr"
        with open(logs / "coordinator.stdout", "w") as stdout, open(self._stderr, "w") as stderr:
            self.process = network.popen(
                "coordinator", fedrun("run", *argv), stdout=stdout, stderr=stderr, env=env_with_repo_on_path()
            )

    @property
    def stderr(self) -> str:
        return self._stderr.read_text()

    def wait(self) -> int:
        return self.process.wait(timeout=WAIT_S)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def _run_coordinator(network: netns.Network, argv: list[str], logs: Path) -> Coordinator:
    coordinator = Coordinator(network, argv, logs)
    try:
        coordinator.wait()
    finally:
        coordinator.stop()
    return coordinator


def _await_stderr(coordinator: Coordinator, text: str) -> float:
    """When `text` appeared in the coordinator's stderr (time.monotonic())."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if text in coordinator.stderr:
            return time.monotonic()
        if coordinator.process.poll() is not None:
            raise AssertionError(f"fedrun run exited ({coordinator.process.returncode}) before {text!r}")
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} from fedrun run after {WAIT_S}s")


def _root_links() -> list[str]:
    return sorted(line.split(":")[1].strip() for line in netns.ip("-o", "link").stdout.splitlines())


def _await_listening(network: netns.Network, node: str, worker: subprocess.Popen[str]) -> None:
    """Until `node` listens on PORT, seen from inside its namespace (the test's own namespace
    cannot reach it, by design)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise AssertionError(f"fedrun worker on {node} exited ({worker.returncode})")
        listening = network.run(node, ["cat", "/proc/net/tcp6", "/proc/net/tcp"], timeout=10).stdout
        if f":{PORT:04X} " in listening:
            return
        time.sleep(0.2)
    raise AssertionError(f"fedrun worker on {node} did not listen on port {PORT} within 60 s")


def _await_rounds(path: Path, count: int, coordinator: Coordinator) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        if coordinator.process.poll() is not None:
            raise AssertionError(
                f"fedrun run exited early ({coordinator.process.returncode}): {coordinator.stderr}"
            )
        time.sleep(0.1)
    raise AssertionError(f"no {count} rounds in {path} after {WAIT_S}s")
