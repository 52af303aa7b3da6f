"""Driving `fedrun` as a user does: a real coordinator process, and the workers it starts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.support.waiting import env_with_repo_on_path

# A small run for tests that drive `fedrun run` as a user does.
SMALL = "--rounds 2 --clients-per-round 8 --epochs 1 --population 100 --eval-clients 4 --no-progress".split()


def fedrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedrun", *args]


def start(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        fedrun(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def wait_for_rounds(path: Path, count: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"fedrun exited early ({process.returncode}): {process.stderr.read()}")
        time.sleep(0.2)
    raise AssertionError(f"no {count} rounds in {path} after {timeout}s")


def worker_pids(coordinator: subprocess.Popen) -> list[int]:
    """The coordinator's TFF worker_binary processes (whatever wraps them)."""
    return [
        p.pid for p in psutil.Process(coordinator.pid).children(recursive=True) if p.name() == "worker_binary"
    ]


def descendant_pids(coordinator: subprocess.Popen) -> list[int]:
    """Every process the coordinator started: workers and whatever isolates or forwards them."""
    return [p.pid for p in psutil.Process(coordinator.pid).children(recursive=True)]


def assert_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [
            pid
            for pid in pids
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"processes outlived the coordinator: {alive}")


def fake_binary(tmp_path: Path, body: str) -> Path:
    """A shell script standing in for worker_binary (what it does instead: `body`)."""
    path = tmp_path / "worker_binary"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def json_lines(path: Path) -> list[dict]:
    """A run's rounds.jsonl or clients.jsonl, one object per line."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def saved_weights(out: Path) -> dict[str, np.ndarray]:
    """The final model a run saved in its folder, by array name."""
    with np.load(out / "model_weights.npz") as data:
        return {k: data[k] for k in data.files}


def max_weight_difference(out: Path, reference: Path) -> float:
    """The largest difference between two runs' final models, over all arrays."""
    ours, theirs = saved_weights(out), saved_weights(reference)
    assert ours.keys() == theirs.keys()
    return max(float(np.max(np.abs(ours[k] - theirs[k]))) for k in theirs)


def assert_same_training(out: Path, reference: Path, rounds: list[dict], expected: list[dict]) -> None:
    """Run `out` trained the model `reference` trained: same final weights, same train metrics
    (`rounds`, `expected`: their rounds.jsonl records)."""
    assert max_weight_difference(out, reference) <= 1e-5
    assert [r["train"]["num_examples"] for r in rounds] == [r["train"]["num_examples"] for r in expected]
    for record, local in zip(rounds, expected, strict=True):
        assert record["train"] == pytest.approx(local["train"], rel=1e-5, abs=1e-7)


def local_reference_run(args: list[str], out: Path, timeout: float) -> Path:
    """`fedrun run ARGS` on 2 local workers from this checkout, the run that one elsewhere (other
    namespaces, containers) must equal: its folder, once it succeeded."""
    done = subprocess.run(
        fedrun("run", *args, "--backend", "local", "--workers", "2", "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_with_repo_on_path(),
    )
    assert done.returncode == 0, done.stderr
    return out
