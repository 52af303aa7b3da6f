"""Stragglers among the simulator's own workers, on real local workers: a worker slowed for real
(cluster.local.throttle), speculative copies and speed-sized shards, and the clients' training
times as the workers measure them (learning.client_work). Each mitigation must leave the model
TFF's own (the `reference` fixture: the same rounds in TFF's single-process context)."""

import numpy as np
import pytest

from cluster import LocalProcessBackend
from cluster.local.options import LocalWorkerOptions
from fedrun.learning.client_time import GROWTH
from fedrun.runtime.dispatch import CANCEL_GRACE_S
from tests.support.backends import CONFIG
from tests.support.configs import flat_config
from tests.support.runs import max_weight_difference, run_coordinator

pytestmark = pytest.mark.timeout(300)

SLOW = "local-1"


def slowed_run(config, source, algorithm, out, factor, mechanism="auto"):
    options = LocalWorkerOptions(slow={SLOW: factor}, slow_mechanism=mechanism)
    with LocalProcessBackend(options) as backend:
        backend.start(config.workers.count)
        return run_coordinator(config, source, algorithm, out, backend=backend)


def per_worker(rounds, value):
    """The mean of value(shard) over the shards of rounds 2 on (round 1 traces), by worker."""
    found: dict[str, list[float]] = {}
    for record in rounds[1:]:
        for shard in record["shards"]:
            found.setdefault(shard["worker"], []).append(value(shard))
    return {worker: float(np.mean(values)) for worker, values in found.items()}


@pytest.mark.parametrize("mechanism", ["auto", "duty-cycle"])
def test_a_slowed_worker_is_slower_in_its_shards_and_its_measured_clients(
    mechanism, source, algorithm, tmp_path
):
    # both workers take shards in every round, the slow one enough clients for a mean
    config = flat_config(CONFIG, shards=6, clients_per_round=40)
    _, rounds = slowed_run(config, source, algorithm, tmp_path, factor=4.0, mechanism=mechanism)

    seconds_per_example = per_worker(rounds, lambda s: (s["end"] - s["start"]) / s["examples"])
    assert seconds_per_example[SLOW] > 2 * seconds_per_example["local-0"]
    clients = {
        worker: np.mean([r["client_time"]["by_worker"][worker]["mean"] for r in rounds[1:]])
        for worker in ("local-0", SLOW)
    }
    assert clients[SLOW] > 2 * clients["local-0"]
    slowed = rounds[-1]["slowed"][SLOW]
    assert slowed["factor"] == 4.0
    assert ("duty cycle" in slowed["mechanism"]) == (mechanism == "duty-cycle")
    assert "local-0" not in rounds[-1]["slowed"]


def test_speculative_copies_beat_a_slow_worker_and_keep_the_model(source, algorithm, reference, tmp_path):
    config = flat_config(CONFIG, speculate=True)
    state, rounds = slowed_run(config, source, algorithm, tmp_path, factor=8.0)

    assert max_weight_difference(state, reference[0]) <= 1e-5
    copies = sum(r["speculation"]["copies"] for r in rounds)
    wins = sum(r["speculation"]["wins"] for r in rounds)
    assert copies >= 1 and wins >= 1
    for record in rounds:
        won = {s["shard"]: s for s in record["shards"]}
        for lost in record["lost_copies"]:  # each loser's call ended soon after its rival won
            assert lost["end"] - won[lost["shard"]]["end"] <= CANCEL_GRACE_S
        assert record["failures"] == []  # a cancelled worker is not a failed one
    assert {s["worker"] for s in rounds[-1]["shards"]} <= {"local-0", SLOW}


def test_speed_sized_shards_give_the_slow_worker_less_and_keep_the_model(
    source, algorithm, reference, tmp_path
):
    config = flat_config(CONFIG, shard_sizing="speed")
    state, rounds = slowed_run(config, source, algorithm, tmp_path, factor=4.0)

    assert max_weight_difference(state, reference[0]) <= 1e-5
    last = rounds[-1]
    assert last["speeds"][SLOW] > last["speeds"]["local-0"]  # seconds per unit of work
    examples = {s["worker"]: s["examples"] for s in last["shards"]}
    assert examples[SLOW] < examples["local-0"]


def test_histogram_percentiles_match_the_clients_timed_one_by_one(source, algorithm, tmp_path):
    """One client per shard: each shard's slowest client is that client's exact time."""
    config = flat_config(CONFIG, shards=CONFIG.workload.clients_per_round)
    _, rounds = run_coordinator(config, source, algorithm, tmp_path)

    for record in rounds:
        measured = record["client_time"]
        assert measured["count"] == record["clients"] == len(record["shards"])
        assert sum(w["count"] for w in measured["by_worker"].values()) == record["clients"]
        exact = np.array([s["slowest_client_s"] for s in record["shards"]])
        assert measured["max"] == pytest.approx(exact.max())
        assert measured["mean"] == pytest.approx(exact.mean())
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            # The same client's bucket: within one bucket's width of the exact order statistic.
            expected = np.percentile(exact, q, method="inverted_cdf")
            assert expected / GROWTH <= measured[name] <= expected * GROWTH, (name, exact)
