"""Stragglers on the virtual clock, through `fedrun run` as a user runs it: real workers, real files.

The policies' decisions are pinned in tests/unit/test_system.py; here: they reach the model and
the records the same way whatever the workers, abandoned rounds keep the model, a system model
alone changes no weight, and resume restores the clock and participation.
"""

import subprocess

import numpy as np
import pytest

from tests.support.processes import fedrun
from tests.support.processes import json_lines as lines
from tests.support.processes import saved_weights as weights

pytestmark = pytest.mark.timeout(400)

BASE = "--rounds 3 --clients-per-round 6 --epochs 1 --population 60 --eval-clients 8 --no-progress".split()
POLICY = "--system-model lognormal --over-selection 1.5 --deadline-s 2.5 --dropout 0.2".split()


def run(out, *args, check=True):
    result = subprocess.run(
        fedrun("run", *BASE, "--out", str(out), *args), capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_a_system_model_alone_adds_simulated_time_and_changes_no_weight(tmp_path):
    run(tmp_path / "plain", "--eval-every", "0")
    run(tmp_path / "timed", "--eval-every", "0", "--system-model", "lognormal")

    plain, timed = weights(tmp_path / "plain"), weights(tmp_path / "timed")
    assert all(np.array_equal(plain[k], timed[k]) for k in plain)
    rounds = lines(tmp_path / "timed" / "rounds.jsonl")
    assert all(
        r["sim"]["selected"] == r["sim"]["reported"] == 6 and not r["sim"]["abandoned"] for r in rounds
    )
    clients = lines(tmp_path / "timed" / "clients.jsonl")
    assert len(clients) == 18 and all(c["outcome"] == "counted" for c in clients)
    for r in rounds:  # waiting for all: the round lasts as long as its slowest client
        assert r["sim"]["round_s"] == pytest.approx(
            max(c["total_s"] for c in clients if c["round"] == r["round"])
        )
    clocks = [r["sim"]["clock_s"] for r in rounds]
    assert clocks == pytest.approx(np.cumsum([r["sim"]["round_s"] for r in rounds]))
    assert all(r["sim"] is None for r in lines(tmp_path / "plain" / "rounds.jsonl"))


def test_policies_decide_the_same_on_one_worker_as_on_three(tmp_path):
    run(tmp_path / "one", *POLICY, "--workers", "1")
    run(tmp_path / "three", *POLICY, "--workers", "3", "--shards", "4")

    one, three = lines(tmp_path / "one" / "rounds.jsonl"), lines(tmp_path / "three" / "rounds.jsonl")
    assert [r["sim"] for r in one] == [r["sim"] for r in three]
    assert lines(tmp_path / "one" / "clients.jsonl") == lines(tmp_path / "three" / "clients.jsonl")
    dropped = {reason: sum(r["sim"]["dropped"][reason] for r in one) for reason in one[0]["sim"]["dropped"]}
    assert dropped["deadline"] + dropped["over_selection"] + dropped["dropout"] > 0
    assert all(r["sim"]["selected"] == 9 for r in one)  # ceil(1.5 x 6)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "three")
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) <= 1e-5
    assert {"speed_q1", "speed_q4"} <= set(one[-1]["eval"])


def test_abandoned_rounds_leave_the_model_unchanged(tmp_path):
    run(
        tmp_path / "run",
        *("--system-model", "lognormal", "--deadline-s", "0.001", "--eval-every", "0"),
        *("--model-init", "zeros"),  # an initial model whose every weight is known
    )

    rounds = lines(tmp_path / "run" / "rounds.jsonl")
    assert [r["sim"]["abandoned"] for r in rounds] == [True, True, True]
    assert all(r["train"] == {} and r["shards"] == [] for r in rounds)
    assert rounds[-1]["sim"]["clock_s"] == pytest.approx(3 * 0.001)
    assert all(np.all(w == 0) for w in weights(tmp_path / "run").values())  # still the initial zeros


def test_resume_restores_the_virtual_clock_and_participation(tmp_path):
    run(tmp_path / "whole", *POLICY, "--rounds", "4")
    run(tmp_path / "cut", *POLICY, "--rounds", "2")
    resumed = subprocess.run(
        fedrun("run", "--resume", str(tmp_path / "cut"), "--rounds", "4"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr

    whole, cut = lines(tmp_path / "whole" / "rounds.jsonl"), lines(tmp_path / "cut" / "rounds.jsonl")
    assert [r["sim"] for r in cut] == [r["sim"] for r in whole]
    assert lines(tmp_path / "cut" / "clients.jsonl") == lines(tmp_path / "whole" / "clients.jsonl")
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert all(np.array_equal(a[k], b[k]) for k in a)
