"""Ctrl-C (and SIGTERM) at any moment: a clean stop within the bound, every time.

Signals are delivered to a real `fedrun run` at moments spread over its life: importing
TensorFlow, starting workers, compiling the first round, mid-shard, between rounds (where the
checkpoint is written), during evaluation, and at the end. Each time the run must exit within
10 s with 130/143 (or 0 if it had finished), leave no process behind, leave a valid rounds.jsonl
and a loadable checkpoint of its last recorded round, and `--resume` must finish with the model
of an uninterrupted run, bit for bit. The default run covers 8 moments; `make soak` covers 24.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support.processes import assert_gone, descendant_pids, fedrun, start
from tests.support.processes import saved_weights as weights

pytestmark = pytest.mark.timeout(900)

ROUNDS = 4
RUN = f"--rounds {ROUNDS} --clients-per-round 8 --epochs 1 --population 100 --eval-clients 4".split()
RUN += ["--no-progress", "--no-tensorboard"]
EXIT_BOUND_S = 10.0

Moment = Callable[[subprocess.Popen, Path], None]  # blocks until the moment to signal has come


def after_start(seconds: float) -> Moment:
    def wait(process: subprocess.Popen, out: Path) -> None:
        time.sleep(seconds)

    wait.__name__ = f"{seconds}s after start"
    return wait


def after_round(recorded: int, seconds: float) -> Moment:
    def wait(process: subprocess.Popen, out: Path) -> None:
        deadline = time.monotonic() + 240
        rounds = out / "rounds.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if rounds.exists() and len(rounds.read_text().splitlines()) >= recorded:
                break
            time.sleep(0.01)
        time.sleep(seconds)

    wait.__name__ = f"{seconds}s after round {recorded}"
    return wait


DEFAULT = [
    (after_start(0.5), signal.SIGINT),  # importing TensorFlow
    (after_start(3.0), signal.SIGTERM),  # workers starting, or the first compile
    (after_start(5.0), signal.SIGINT),  # the first round
    (after_round(1, 0.0), signal.SIGINT),  # between rounds: checkpoint and evaluation
    (after_round(1, 0.12), signal.SIGTERM),  # in round 2's shards
    (after_round(2, 0.05), signal.SIGINT),
    (after_round(3, 0.3), signal.SIGINT),
    (after_round(ROUNDS, 0.0), signal.SIGTERM),  # the end: weights, summary, shutdown
]
LONG = (
    DEFAULT
    + [
        (after_start(seconds), sig)
        for seconds, sig in [
            (0.1, signal.SIGINT),
            (1.5, signal.SIGTERM),
            (2.0, signal.SIGINT),
            (4.0, signal.SIGTERM),
            (6.0, signal.SIGINT),
            (7.0, signal.SIGTERM),
        ]
    ]
    + [
        (after_round(recorded, seconds), sig)
        for recorded, seconds, sig in [
            (1, 0.03, signal.SIGTERM),
            (1, 0.25, signal.SIGINT),
            (1, 0.4, signal.SIGTERM),
            (2, 0.0, signal.SIGTERM),
            (2, 0.2, signal.SIGINT),
            (3, 0.0, signal.SIGTERM),
            (3, 0.1, signal.SIGINT),
            (4, 0.05, signal.SIGINT),
            (4, 0.2, signal.SIGTERM),
            (4, 0.5, signal.SIGINT),
        ]
    ]
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess.run(
        fedrun("run", *RUN, "--out", str(out)), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return weights(out)


def interrupt(moment: Moment, sig: signal.Signals, out: Path) -> tuple[int, float]:
    """Runs fedrun, signals it at the moment; its exit status and how long it took to exit."""
    process = start(["run", *RUN, "--out", str(out)])
    try:
        moment(process, out)
        pids = descendant_pids(process) if process.poll() is None else []
        signalled = time.monotonic()
        process.send_signal(sig)
        try:
            process.wait(timeout=EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"fedrun was still running {EXIT_BOUND_S} s after {sig.name} ({moment.__name__})")
        took = time.monotonic() - signalled
    finally:
        process.kill()
        process.communicate()
    assert_gone(pids, timeout=3)
    return process.returncode, took


def check_what_it_left(out: Path) -> None:
    rounds = out / "rounds.jsonl"
    if not rounds.exists():
        return
    text = rounds.read_text()
    assert text == "" or text.endswith("\n"), "a torn line"
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["round"] for r in records] == list(range(1, len(records) + 1))
    if records:
        with np.load(out / "checkpoint.npz") as checkpoint:
            assert json.loads(bytes(checkpoint["__meta__"]))["round"] == records[-1]["round"]


def check_moments(moments, uninterrupted, tmp_path: Path) -> None:
    took_s = {}
    for index, (moment, sig) in enumerate(moments):
        out = tmp_path / f"run-{index}"
        code, took = interrupt(moment, sig, out)
        took_s[f"{sig.name} {moment.__name__}"] = took
        assert code in (128 + sig, 0), f"exit {code} after {sig.name} at {moment.__name__}"
        check_what_it_left(out)
        if code != 0 or not (out / "model_weights.npz").exists():
            # Stopped before it wrote its config, a run has left nothing to resume: start it again.
            again = ["--resume", str(out)] if (out / "config.toml").exists() else [*RUN, "--out", str(out)]
            resumed = subprocess.run(fedrun("run", *again), capture_output=True, text=True, timeout=300)
            assert resumed.returncode == 0, f"{moment.__name__}: {resumed.stderr}"
        ours = weights(out)
        assert all(np.array_equal(ours[k], uninterrupted[k]) for k in uninterrupted), moment.__name__
    print(
        f"{len(moments)} moments; exit after the signal: "
        + ", ".join(f"{k}: {v:.2f} s" for k, v in took_s.items())
    )


def test_a_stop_at_any_of_8_moments_is_clean_and_resumes_to_the_same_model(uninterrupted, tmp_path):
    check_moments(DEFAULT, uninterrupted, tmp_path)


@pytest.mark.soak
def test_a_stop_at_any_of_24_moments_is_clean_and_resumes_to_the_same_model(uninterrupted, tmp_path):
    check_moments(LONG, uninterrupted, tmp_path)


def test_a_stopped_benchmark_stops_every_system_it_started(tmp_path):
    bench = start(
        [
            "bench",
            *"--rounds 30 --clients-per-round 6 --epochs 1 --population 60 --eval-clients 4".split(),
            "--workers",
            "2",
            "--out",
            str(tmp_path / "bench.json"),
        ]
    )
    try:
        time.sleep(15)  # its systems are built and running rounds by now
        pids = descendant_pids(bench)
        assert pids, "the benchmark started no system"
        signalled = time.monotonic()
        bench.send_signal(signal.SIGINT)
        assert bench.wait(timeout=EXIT_BOUND_S) == 128 + signal.SIGINT
        assert time.monotonic() - signalled < EXIT_BOUND_S
    finally:
        bench.kill()
        bench.communicate()
    assert_gone(pids, timeout=5)
