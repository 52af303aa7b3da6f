"""The distributed result is the single-process result.

fedrun over 1, 2 and 3 real local workers (and more shards than workers, dispatched dynamically)
must end with the weights and metrics of TFF's own `build_weighted_fed_avg` run through its
ordinary single-process local context, on the same clients, seeds and data. The reference is
built as the tutorial builds it (TFF's default client loop, `dataset.reduce`); fedrun uses its
own default (`client_loop = "iterator"`) and its own client work, which times each client on its
worker: the timing must not change the model.
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
    tutorial = flat_config(CONFIG, client_loop="reduce", client_timing=False)  # TFF's own FedAvg
    return reference_run(tutorial, source, algorithm_for(tutorial, source))


@pytest.mark.parametrize("workers,shards,recycle", [(1, 0, 0), (2, 0, 0), (3, 0, 0), (2, 5, 0), (2, 0, 1)])
def test_fedrun_matches_tff_single_process(workers, shards, recycle, source, algorithm, reference, tmp_path):
    # recycle=1: fresh worker processes before every round after the first; same result.
    config = flat_config(CONFIG, workers=workers, shards=shards, recycle_workers_every=recycle)
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
        assert len(record["shards"]) == (shards or workers)
        assert {s["worker"] for s in record["shards"]} <= {f"local-{i}" for i in range(workers)}
        assert sum(len(s["clients"]) for s in record["shards"]) == CONFIG.workload.clients_per_round
        recycled = [f"local-{i}" for i in range(workers)] if recycle and record["round"] > 1 else []
        assert sorted(record["recycled"]) == recycled
