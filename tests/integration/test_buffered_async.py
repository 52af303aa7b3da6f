"""Buffered asynchronous aggregation (FedBuff) on real local workers.

It is synchronous FedAvg where it should be (equal client times, B = C = K, constant weights: the
only stand-in here is that equal-times system model, tests/unit/test_system.py's GivenTimes);
one server update is the staleness-weighted, example-weighted mean of the clients' deltas,
checked in numpy against each client's delta computed alone; the result does not depend on the
worker count; resume is exact. The schedule's decisions are pinned in
tests/unit/test_buffered_schedule.py.
"""

import math
import subprocess

import numpy as np
import pytest

from cluster import LocalProcessBackend
from fedrun.data.synthetic import SyntheticDigits
from fedrun.learning.algorithm import algorithm_for
from fedrun.loop.simulation import runtime_over
from fedrun.loop.steps import buffered_schedule, round_steps
from fedrun.runtime.execution import TrainingGroup
from fedrun.selection.cohort import training_cohort
from tests.support.configs import flat_config
from tests.support.processes import fedrun
from tests.support.processes import json_lines as lines
from tests.support.processes import saved_weights as weights
from tests.support.runs import max_weight_difference, run_coordinator
from tests.unit.test_system import GivenTimes

pytestmark = pytest.mark.timeout(400)

CONFIG = flat_config(rounds=3, clients_per_round=6, epochs=2, population=60, eval_every=0, progress=False)
ASYNC = flat_config(
    CONFIG,
    system_model="lognormal",
    aggregation="buffered-async",
    buffer_size=6,
    max_concurrency=6,
    staleness_weight="constant",
)
BASE = "--rounds 4 --epochs 1 --population 60 --eval-clients 8 --eval-every 2 --no-progress".split()
BUFFERED = (
    "--system-model lognormal --aggregation buffered-async --buffer-size 4 --max-concurrency 10 "
    "--max-staleness 2 --dropout 0.1".split()
)


@pytest.fixture(scope="module")
def source():
    return SyntheticDigits(population=CONFIG.data.population)


def test_equal_times_with_b_equal_to_c_equal_to_k_is_synchronous_fedavg(source, tmp_path):
    sync_state, sync_rounds = run_coordinator(
        CONFIG, source, algorithm_for(CONFIG, source), tmp_path / "sync"
    )
    algorithm = algorithm_for(ASYNC, source)
    steps = round_steps(ASYNC, source, algorithm.model_bytes)
    equal = GivenTimes(dict.fromkeys(range(source.population), 2.0))
    steps.schedule = buffered_schedule(ASYNC, equal, steps.selector)
    state, rounds = run_coordinator(ASYNC, source, algorithm, tmp_path / "async", steps=steps)

    assert max_weight_difference(state, sync_state) <= 1e-5
    assert max(float(np.max(np.abs(w))) for w in state.global_model_weights.trainable) > 1e-3
    for record, expected in zip(rounds, sync_rounds, strict=True):
        assert [s["clients"] for s in record["shards"]] == [s["clients"] for s in expected["shards"]]
        assert record["train"]["num_examples"] == expected["train"]["num_examples"]
        assert record["train"]["loss"] == pytest.approx(expected["train"]["loss"], rel=1e-5)
        assert record["buffered"]["staleness"]["max"] == 0
        assert record["sim"]["round_s"] == 2.0


def test_an_update_is_the_staleness_weighted_example_weighted_mean_of_the_deltas(source):
    config = flat_config(ASYNC, workers=1)
    algorithm = algorithm_for(config, source)
    with LocalProcessBackend() as backend:
        backend.start(1)
        runtime = runtime_over(backend, algorithm, config)
        try:
            state = runtime.initial_state()
            start = state.global_model_weights
            cohort = training_cohort(source, 0, 1, 4)
            # a second start version: the model after one update of these clients
            later = runtime.train_buffered(1, state, cohort, [TrainingGroup((0, 1, 2, 3), start, 1.0)])
            later_weights = later.state.global_model_weights
            groups = [
                TrainingGroup((0, 1), start, 1 / math.sqrt(3)),
                TrainingGroup((2, 3), later_weights, 1.0),
            ]
            update = runtime.train_buffered(2, state, cohort, groups)
            # each client alone, from its group's weights, weight 1; server SGD at lr 1: new = w - delta
            deltas = []
            for position, group in ((0, groups[0]), (1, groups[0]), (2, groups[1]), (3, groups[1])):
                alone = runtime.train_buffered(
                    3, state, cohort.subset([position]), [TrainingGroup((0,), group.weights, 1.0)]
                )
                new = alone.state.global_model_weights.trainable
                deltas.append([w - n for w, n in zip(start.trainable, new)])
        finally:
            runtime.close()

    examples = np.array(cohort.sizes, float) * config.workload.epochs
    weights = [1 / math.sqrt(3)] * 2 + [1.0] * 2
    for layer, (before, after) in enumerate(
        zip(start.trainable, update.state.global_model_weights.trainable)
    ):
        mean = sum(w * n * d[layer] for w, n, d in zip(weights, examples, deltas)) / examples.sum()
        np.testing.assert_allclose(after, before - mean, atol=1e-5)
    assert update.metrics["num_examples"] == int(examples.sum())
    assert not np.allclose(deltas[0][0], deltas[2][0])  # the two start versions differ


def run(out, *args):
    result = subprocess.run(
        fedrun("run", *BASE, "--out", str(out), *args), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def test_one_worker_and_three_run_the_same_updates(tmp_path):
    run(tmp_path / "one", *BUFFERED, "--workers", "1")
    run(tmp_path / "three", *BUFFERED, "--workers", "3", "--shards", "4")

    one, three = lines(tmp_path / "one" / "rounds.jsonl"), lines(tmp_path / "three" / "rounds.jsonl")
    assert [(r["sim"], r["buffered"]) for r in one] == [(r["sim"], r["buffered"]) for r in three]
    assert lines(tmp_path / "one" / "clients.jsonl") == lines(tmp_path / "three" / "clients.jsonl")
    a, b = weights(tmp_path / "one"), weights(tmp_path / "three")
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) <= 1e-5
    assert max(r["buffered"]["staleness"]["max"] for r in one) > 0  # stale results were weighted
    assert [r["buffered"]["version"] for r in one] == [1, 2, 3, 4]
    # each update takes B = 4 results; one epoch: it trains the examples its clients hold
    assert all(r["buffered"]["buffered"] == r["clients"] == 4 for r in one)
    assert all(r["train"]["num_examples"] == r["examples"] for r in one)
    assert sum(r["buffered"]["discarded"]["dropout"] for r in one) > 0
    assert [bool(r["eval"]) for r in one] == [False, True, False, True]  # --eval-every counts updates


def test_resume_continues_exactly(tmp_path):
    run(tmp_path / "whole", *BUFFERED)
    run(tmp_path / "cut", *BUFFERED, "--rounds", "2")
    resumed = subprocess.run(
        fedrun("run", "--resume", str(tmp_path / "cut"), "--rounds", "4"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr

    whole, cut = lines(tmp_path / "whole" / "rounds.jsonl"), lines(tmp_path / "cut" / "rounds.jsonl")
    assert [(r["sim"], r["buffered"]) for r in cut] == [(r["sim"], r["buffered"]) for r in whole]
    assert lines(tmp_path / "cut" / "clients.jsonl") == lines(tmp_path / "whole" / "clients.jsonl")
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert all(np.array_equal(a[k], b[k]) for k in a)
