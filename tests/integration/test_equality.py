"""The distributed result is the single-process result.

fedrun over 1, 2 and 3 real local workers (and more shards than workers, dispatched dynamically)
must end with the weights and metrics of TFF's own `build_weighted_fed_avg` run through its
ordinary single-process local context, on the same clients, seeds and data. The reference is
built as the tutorial builds it (TFF's default client loop, `dataset.reduce`); fedrun uses its
own default (`client_loop = "iterator"`) and its own FedAvg (learning.fed_avg), which builds each
client's dataset inside the client's training and times each client on its worker: neither may
change the model, timed or untimed.
"""

import numpy as np
import pytest

from fedrun.data.synthetic import SyntheticDigits
from fedrun.learning.algorithm import algorithm_for
from tests.support.configs import flat_config
from tests.support.runs import max_weight_difference, reference_run, run_coordinator

pytestmark = pytest.mark.timeout(300)

CONFIG = flat_config(rounds=3, clients_per_round=10, epochs=2, population=200, eval_every=0, progress=False)


@pytest.fixture(scope="module")
def source():
    return SyntheticDigits(population=CONFIG.data.population)


@pytest.fixture(scope="module")
def algorithm(source):
    return algorithm_for(CONFIG, source)


@pytest.fixture(scope="module")
def reference(source):
    tutorial = flat_config(CONFIG, client_loop="reduce")
    return reference_run(tutorial, source, algorithm_for(tutorial, source, tff_fed_avg=True))


@pytest.mark.parametrize("workers,shards,recycle", [(1, 0, 0), (2, 0, 0), (3, 0, 0), (2, 5, 0), (2, 0, 1)])
def test_fedrun_matches_tff_single_process(workers, shards, recycle, source, algorithm, reference, tmp_path):
    _assert_matches(
        flat_config(CONFIG, workers=workers, shards=shards, recycle_workers_every=recycle),
        source,
        algorithm,
        reference,
        tmp_path,
    )


def test_untimed_fedrun_matches_tff_single_process(source, reference, tmp_path):
    config = flat_config(CONFIG, workers=2, client_timing=False)
    _assert_matches(config, source, algorithm_for(config, source), reference, tmp_path)


def _assert_matches(config, source, algorithm, reference, tmp_path):
    state, rounds = run_coordinator(config, source, algorithm, tmp_path)
    ref_state, ref_metrics = reference

    assert max_weight_difference(state, ref_state) <= 1e-5
    # The weights moved: equality is not two untrained models agreeing.
    assert max(float(np.max(np.abs(w))) for w in state.global_model_weights.trainable) > 1e-3

    assert len(rounds) == CONFIG.workload.rounds
    for record, expected in zip(rounds, ref_metrics):
        assert record["train"]["num_examples"] == expected["num_examples"]
        assert record["train"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert record["train"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
        workers, shards, recycle = config.workers.count, config.dispatch.shards, config.dispatch.recycle_every
        assert len(record["shards"]) == (shards or workers)
        assert {s["worker"] for s in record["shards"]} <= {f"local-{i}" for i in range(workers)}
        assert sum(len(s["clients"]) for s in record["shards"]) == CONFIG.workload.clients_per_round
        # recycle=1: fresh worker processes before every round after the first; same result.
        recycled = [f"local-{i}" for i in range(workers)] if recycle == 1 and record["round"] > 1 else []
        assert sorted(record["recycled"]) == recycled
