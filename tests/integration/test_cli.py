"""`fedrun run` as a user runs it: a real coordinator process, real workers, real files."""

import json
import os
import signal
import subprocess
import time
import tomllib

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

pytestmark = pytest.mark.timeout(300)


def test_run_writes_rounds_config_and_weights(tmp_path):
    out = tmp_path / "run"
    # As from a user's shell: no TF_CPP_MIN_LOG_LEVEL (importing TensorFlow in this process set one).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        fedrun("run", *SMALL, "--workers", "2", "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Unable to register" not in result.stderr  # TensorFlow's CUDA-plugin noise stays hidden
    # ...but not from the workers, whose logs keep TensorFlow's messages (INFO included).
    assert "ExecutorService started" in (out / "workers" / "local-0.log").read_text()
    assert "round    1" in result.stdout and "round    2" in result.stdout
    assert "round latency p50" in result.stdout and "examples/s median" in result.stdout

    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["latency_s"] > 0 and r["examples_per_s"] > 0 and r["clients_per_s"] > 0
        assert sum(len(s["clients"]) for s in r["shards"]) == 8
        assert all(s["end"] >= s["start"] >= r["start"] for s in r["shards"])
        assert {s["worker"] for s in r["shards"]} <= {"local-0", "local-1"}
        assert sum(s["examples"] for s in r["shards"]) == r["examples"]
        assert r["examples_trained"] == r["examples"]  # one epoch
        assert 0 <= r["train"]["accuracy"] <= 1
        assert set(r["eval"]) == {"round_clients", "heldout"}
    config = tomllib.loads((out / "config.toml").read_text())
    assert (
        config["workload"]["rounds"] == 2
        and config["workers"]["count"] == 2
        and config["output"]["dir"] == str(out)
    )
    with np.load(out / "model_weights.npz") as weights:
        assert weights["trainable_0"].shape == (784, 10) and np.abs(weights["trainable_0"]).max() > 0


def test_config_file_and_flag_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        "rounds = 1\nclients_per_round = 4\nepochs = 1\npopulation = 50\neval_every = 0\n"
        "workers = 2\nprogress = false\n"
    )
    out = tmp_path / "run"
    result = subprocess.run(
        fedrun("run", "--config", str(cfg), "--workers", "1", "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["workers"]["count"] == 1 and resolved["workload"]["clients_per_round"] == 4
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert len(rounds) == 1 and rounds[0]["eval"] == {} and rounds[0]["shards"][0]["worker"] == "local-0"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--rounds", "-1"], "rounds must be at least 1"),
        (["--clients-per-round", "0"], "clients_per_round must be at least 1"),
        (["--clients-per-round", "500", "--population", "100"], "exceeds the population"),
        (["--client-lr", "0"], "client_lr must be greater than 0"),
        (["--model", "resnet"], "model must be one of linear, custom-linear, cnn, got 'resnet'"),
    ],
)
def test_bad_values_fail_fast_with_a_clear_message(args, message, tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        fedrun("run", *args, "--out", str(tmp_path / "o")), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_unknown_flag_is_rejected(tmp_path):
    result = subprocess.run(fedrun("run", "--roundz", "3"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unrecognized arguments: --roundz" in result.stderr


def test_output_path_that_is_a_file_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    result = subprocess.run(
        fedrun("run", *SMALL, "--out", str(blocker)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "choose a writable --out" in result.stderr
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_workers_and_keeps_results(sig, code, tmp_path):
    out = tmp_path / "run"
    process = start(["run", *SMALL, "--rounds", "200", "--out", str(out)])
    try:
        wait_for_rounds(out / "rounds.jsonl", 1, process)
        assert len(worker_pids(process)) == 2
        pids = descendant_pids(process)
        process.send_signal(sig)
        assert process.wait(timeout=60) == code
    finally:
        process.kill()
    assert_gone(pids)
    assert len((out / "rounds.jsonl").read_text().splitlines()) >= 1


def test_workers_die_with_a_sigkilled_coordinator(tmp_path):
    out = tmp_path / "run"
    process = start(["run", *SMALL, "--rounds", "200", "--out", str(out)])
    try:
        wait_for_rounds(out / "rounds.jsonl", 1, process)
        assert len(worker_pids(process)) == 2
        pids = descendant_pids(process)
        process.kill()
        process.wait(timeout=30)
    finally:
        process.kill()
    assert_gone(pids)
