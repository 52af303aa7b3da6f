"""The Dockerfile built and run for real (`make image-test`, opt-in: -m image). As root on Debian:
podman from Debian's archive, the Dockerfile's base image made from Debian bookworm (no registry
can be pulled from here), the pinned lists as wheels built on this machine, then an offline
`podman build`. Two `fedrun worker` containers and a `fedrun run` container on a podman network,
the workers reached by container name as a StatefulSet's pods are, must train the model a local
run trains.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import (
    SMALL,
    assert_same_training,
    json_lines,
    local_reference_run,
    max_weight_difference,
)
from tests.support.waiting import REPO_ROOT

pytestmark = [pytest.mark.image, pytest.mark.timeout(2400)]

DOCKERFILE = REPO_ROOT / "Dockerfile"
CACHE = REPO_ROOT / ".cache" / "image"  # the base's rootfs and the wheels, kept between runs
WHEELS_IN_BUILD = "/wheels"  # where `podman build -v` shows CACHE/wheels to the RUN steps
IMAGE = "localhost/fedrun:image-test"
LABEL = "fedrun.image-test"  # on every container and network made here, so leftovers can be found
UID = 10001  # the Dockerfile's USER, as deploy/k8s's runAsUser
PORT = 8000
RUN = [*SMALL, "--no-tensorboard"]
WAIT_S = 300  # bounds a run, in a container or not


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr}"
    return done


def dockerfile_base() -> str:
    """The image every FROM names (python:3.11-slim), as podman names a Docker Hub image."""
    bases = {line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")}
    [base] = bases
    return base if "/" in base else f"docker.io/library/{base}"


def build_wheels(folder: Path) -> None:
    """The lists `make venv` installs, as wheels for the image's Python: this interpreter is 3.11 on
    the same architecture as the base debootstrap made, and the lists' sdists (jax 0.4.14) are
    built here, since the image has no compiler and its build no network."""
    assert sys.version_info[:2] == (3, 11), "the base image's python3 is Debian bookworm's 3.11"
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "-w", str(folder)]
    for args in (["-r", "requirements/lock.txt"], ["--no-deps", "-r", "requirements/tff.txt"]):
        done = subprocess.run([*pip, *args], cwd=REPO_ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]


def remove_leftovers() -> None:
    """Containers and networks of an earlier run that was killed before it could clean up."""
    containers = podman("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if containers:
        podman("rm", "-f", "-t", "0", *containers)
    networks = podman("network", "ls", "-q", "--filter", f"label={LABEL}").stdout.split()
    if networks:
        podman("network", "rm", "-f", *networks)


@pytest.fixture(scope="module")
def image() -> str:
    if os.geteuid() != 0:
        pytest.skip("the image test installs podman and makes a base image: run `make image-test` as root")
    base = subprocess.run(
        [REPO_ROOT / "tests" / "image" / "build_base.sh", dockerfile_base(), CACHE],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert base.returncode == 0, base.stdout + base.stderr
    print(base.stdout, end="")
    remove_leftovers()
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    build_wheels(wheels)

    # --format=docker keeps the HEALTHCHECK (OCI images have none); the wheels reach only RUN steps.
    command = ["podman", "build", "--pull=never", "--network=none", "--format=docker", "-t", IMAGE]
    command += ["-v", f"{wheels}:{WHEELS_IN_BUILD}:ro", "--build-arg", "PIP_NO_INDEX=1"]
    command += ["--build-arg", f"PIP_FIND_LINKS={WHEELS_IN_BUILD}", str(REPO_ROOT)]
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    began = time.monotonic()
    log = CACHE / "build.log"
    with open(log, "w") as output:
        build = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, timeout=1800)
    assert build.returncode == 0, f"podman build failed; its output is in {log}:\n{log.read_text()[-4000:]}"
    built = time.monotonic() - began
    if previous and previous != podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip():
        podman("rmi", previous, check=False)  # the last run's image, 3 GB; podman's layer cache stays
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\n{IMAGE}: {size / 1e9:.2f} GB, built in {built:.0f} s (log: {log})")
    return IMAGE


@pytest.fixture
def network() -> Iterator[str]:
    """A podman network of its own; every container on it is removed when the test ends."""
    name = f"fedrun-image-test-{uuid.uuid4().hex[:8]}"
    podman("network", "create", "--label", LABEL, name)
    try:
        yield name
    finally:
        containers = podman("ps", "-aq", "--filter", f"network={name}").stdout.split()
        if containers:
            podman("rm", "-f", "-t", "0", *containers)
        podman("network", "rm", "-f", name)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same rounds on the local backend, from this checkout."""
    return local_reference_run(RUN, tmp_path_factory.mktemp("local"), WAIT_S)


def start_worker(image: str, network: str, name: str) -> None:
    podman("run", "-d", "--name", name, "--label", LABEL, "--network", network, image, "worker")  # port 8000
    deadline = time.monotonic() + 120
    while podman("healthcheck", "run", name, check=False).returncode != 0:  # the image's HEALTHCHECK
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"worker {name} is {state}: {podman('logs', name).stderr}"
        assert time.monotonic() < deadline, f"worker {name} not healthy within 120 s"
        time.sleep(1)


def test_containers_train_the_model_a_local_run_trains(
    image: str, network: str, local_run: Path, tmp_path: Path
) -> None:
    workers = [f"{network}-worker-{i}" for i in range(2)]
    for name in workers:
        start_worker(image, network, name)
    out = tmp_path / "run"
    out.mkdir()
    os.chown(out, UID, UID)  # the coordinator writes its run folder as the image's user
    container = ["--rm", "--name", f"{network}-coordinator", "--label", LABEL, "--network", network]
    container += ["-v", f"{out}:/data/run"]
    static = ["--backend", "static", "--workers", "2", "--allow-remote-workers"]
    static += ["--worker-addresses", ",".join(f"{name}:{PORT}" for name in workers)]

    began = time.monotonic()
    done = podman(
        "run", *container, image, "run", *RUN, *static, "--out", "/data/run", timeout=WAIT_S, check=False
    )
    took = time.monotonic() - began

    logs = "\n".join(podman("logs", name).stderr[-2000:] for name in workers)
    assert done.returncode == 0, f"{done.stderr}\nworkers:\n{logs}"
    assert podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == f"{UID}:{UID}"
    for name in workers:  # the worker's pid 1 (fedrun worker) runs as the image's user
        assert podman("exec", name, "stat", "-c", "%u", "/proc/1").stdout.strip() == str(UID)
    assert {path.stat().st_uid for path in out.iterdir()} == {UID}
    rounds, expected = json_lines(out / "rounds.jsonl"), json_lines(local_run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert {shard["worker"] for shard in record["shards"]} == {"static-0", "static-1"}
        assert record["failures"] == []
    assert_same_training(out, local_run, rounds, expected)
    for record, local in zip(rounds, expected, strict=True):
        assert record["eval"].keys() == local["eval"].keys()
        for group, metrics in record["eval"].items():
            assert metrics == pytest.approx(local["eval"][group], rel=1e-5, abs=1e-7)

    print(f"\ncontainers (2 workers, coordinator) {took:.1f} s; the local run's numbers in brackets")
    for record, local in zip(rounds, expected, strict=True):
        print(
            f"round {record['round']}: train loss {record['train']['loss']:.6f} ({local['train']['loss']:.6f})"
            f", accuracy {record['train']['accuracy']:.6f} ({local['train']['accuracy']:.6f})"
            f", heldout eval accuracy {record['eval']['heldout']['accuracy']:.6f}"
            f" ({local['eval']['heldout']['accuracy']:.6f})"
        )
    print(f"largest final weight difference: {max_weight_difference(out, local_run):.2e}")
