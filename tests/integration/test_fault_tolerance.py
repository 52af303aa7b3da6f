"""Dead workers, killed coordinators and diverging runs: nothing lost, nothing left running."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.support.processes import (
    SMALL,
    assert_gone,
    descendant_pids,
    fedrun,
    start,
    wait_for_rounds,
    worker_pids,
)
from tests.support.processes import saved_weights as weights

pytestmark = pytest.mark.timeout(400)

RUN = [*SMALL, "--population", "60", "--eval-every", "2"]


def rounds_of(out):
    return [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fault_free(tmp_path_factory):
    """The uninterrupted 6-round run every faulty run must reproduce exactly."""
    out = tmp_path_factory.mktemp("fault-free")
    result = subprocess.run(
        fedrun("run", *RUN, "--rounds", "6", "--out", str(out)), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return out


def test_worker_killed_mid_run_gives_the_identical_model(fault_free, tmp_path):
    out = tmp_path / "run"
    process = start(["run", *RUN, "--rounds", "6", "--out", str(out)])
    try:
        wait_for_rounds(out / "rounds.jsonl", 1, process)
        victim = worker_pids(process)[1]
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert_gone([victim])
    records = rounds_of(out)
    failures = [f for r in records for f in r["failures"]]
    assert len(failures) >= 1 and all(f["replaced"] for f in failures)
    assert all(r["workers"] == 2 for r in records)  # the dead worker was replaced
    ours, theirs = weights(out), weights(fault_free)
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)
    assert [r["train"] for r in records] == [r["train"] for r in rounds_of(fault_free)]


def test_resume_after_sigkill_is_bit_identical_and_repairs_a_torn_line(fault_free, tmp_path):
    out = tmp_path / "run"
    process = start(["run", *RUN, "--rounds", "6", "--out", str(out)])
    try:
        wait_for_rounds(out / "rounds.jsonl", 2, process)
        pids = descendant_pids(process)
        process.kill()
        process.wait(timeout=30)
    finally:
        process.kill()
    assert_gone(pids)
    done = len(rounds_of(out))
    with open(out / "rounds.jsonl", "a") as f:
        f.write('{"round": 99, "latency')  # what a crash mid-write leaves

    result = subprocess.run(fedrun("run", "--resume", str(out)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torn" in result.stderr
    records = rounds_of(out)
    assert [r["round"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert done >= 2
    ours, theirs = weights(out), weights(fault_free)
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)
    assert [r["train"] for r in records] == [r["train"] for r in rounds_of(fault_free)]


def test_resume_with_a_different_workload_is_refused(fault_free, tmp_path):
    before = (fault_free / "rounds.jsonl").read_text()
    result = subprocess.run(
        fedrun("run", "--resume", str(fault_free), "--clients-per-round", "4"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "different configuration" in result.stderr and "clients_per_round" in result.stderr
    assert (fault_free / "rounds.jsonl").read_text() == before


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    result = subprocess.run(
        fedrun("run", "--resume", str(tmp_path)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "not a fedrun run directory" in result.stderr


def test_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    out = tmp_path / "run"
    started = time.monotonic()
    # Evaluation every 2 rounds: round 1's blow-up goes unseen until round 2 trains on it.
    result = subprocess.run(
        fedrun("run", *RUN, "--rounds", "3", "--client-lr", "1e36", "--server-lr", "1000", "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "training diverged in round 2" in result.stderr and "Traceback" not in result.stderr
    assert [r["round"] for r in rounds_of(out)] == [1]
    with np.load(out / "checkpoint.npz") as checkpoint:
        assert json.loads(bytes(checkpoint["__meta__"]))["round"] == 1
    assert time.monotonic() - started < 100
