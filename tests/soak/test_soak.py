"""Opt-in soak test (`make soak`, or `pytest -m soak`): 200 rounds with a worker killed about
every 20 rounds and one coordinator SIGKILL + resume must end with the fault-free model, and leave
no process behind."""

import os
import random
import signal
import subprocess

import numpy as np
import pytest

from tests.support.processes import assert_gone, descendant_pids, fedrun, start, wait_for_rounds, worker_pids

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]

ROUNDS = 200
RUN = f"--rounds {ROUNDS} --clients-per-round 8 --epochs 1 --population 500 --eval-every 20".split()
RUN += ["--eval-clients", "8", "--no-progress"]


def rounds_done(out) -> int:
    path = out / "rounds.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_with_faults(out, stop_at: int | None, rng: random.Random) -> tuple[subprocess.Popen, list[int], int]:
    """Runs until `stop_at` rounds (then SIGKILLs the coordinator) or the end, killing a random
    worker about every 20 rounds."""
    args = (
        ["run", "--resume", str(out)] if (out / "config.toml").exists() else ["run", *RUN, "--out", str(out)]
    )
    process = start(args)
    seen, kills = [], 0
    next_kill = rounds_done(out) + rng.randint(15, 25)
    try:
        while process.poll() is None:
            target = min(next_kill, stop_at or ROUNDS, ROUNDS)
            try:
                wait_for_rounds(out / "rounds.jsonl", target, process, timeout=600)
            except AssertionError:
                if process.poll() is not None:
                    break
                raise
            pids = worker_pids(process)
            seen += descendant_pids(process)
            if stop_at is not None and rounds_done(out) >= stop_at:
                process.kill()
                process.wait(timeout=30)
                break
            if target == next_kill and pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
                next_kill += rng.randint(15, 25)
            if target >= ROUNDS:
                process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process, seen, kills


def test_soak_faults_and_resume_reproduce_the_fault_free_model(tmp_path):
    clean = tmp_path / "clean"
    result = subprocess.run(
        fedrun("run", *RUN, "--out", str(clean)), capture_output=True, text=True, timeout=3000
    )
    assert result.returncode == 0, result.stderr

    rng = random.Random(0)
    faulty = tmp_path / "faulty"
    _, seen_first, kills_first = run_with_faults(faulty, stop_at=rng.randint(80, 120), rng=rng)
    process, seen_second, kills_second = run_with_faults(faulty, stop_at=None, rng=rng)
    assert process.returncode == 0, process.stderr.read()
    assert kills_first + kills_second >= 8

    with np.load(clean / "model_weights.npz") as a, np.load(faulty / "model_weights.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert rounds_done(faulty) == ROUNDS
    assert_gone(seen_first + seen_second)
