"""The distributed result is the single-process result.

fedrun over 1, 2 and 3 real local workers (and more shards than workers, dispatched dynamically)
must end with the weights and metrics of TFF's own `build_weighted_fed_avg` run through its
ordinary single-process local context, on the same clients, seeds and data.
"""

import dataclasses

import numpy as np
import pytest

from cluster import LocalProcessBackend
from fedrun.config import RunConfig
from fedrun.coordinator import Coordinator
from fedrun.data.synthetic import SyntheticDigits
from fedrun.dispatch import Dispatcher
from fedrun.learning import build_algorithm
from fedrun.reference import reference_training, tff_local_context
from fedrun.results import RunDirectory, read_rounds
from fedrun.worker_session import WorkerSession

pytestmark = pytest.mark.timeout(300)

CONFIG = RunConfig(rounds=3, clients_per_round=10, epochs=2, population=200, eval_every=0, progress=False)


@pytest.fixture(scope="module")
def source():
    return SyntheticDigits(population=CONFIG.population)


@pytest.fixture(scope="module")
def algorithm(source):
    return build_algorithm(source, model=CONFIG.model, epochs=CONFIG.epochs, batch_size=CONFIG.batch_size,
                           shuffle_buffer=CONFIG.shuffle_buffer, client_lr=CONFIG.client_lr,
                           server_lr=CONFIG.server_lr)


@pytest.fixture(scope="module")
def reference(algorithm, source):
    with tff_local_context():
        return reference_training(algorithm, source, seed=CONFIG.seed, rounds=CONFIG.rounds,
                                  clients_per_round=CONFIG.clients_per_round)


def run_fedrun(config, source, algorithm, tmp_path):
    run_dir = RunDirectory(tmp_path)
    run_dir.start_rounds()
    with LocalProcessBackend() as backend:
        sessions = [WorkerSession(w, config.rpc_timeout_s) for w in backend.start(config.workers)]
        try:
            state = Coordinator(config, source, algorithm, Dispatcher(sessions, backend.is_alive), run_dir).run()
        finally:
            for s in sessions:
                s.close()
    return state, read_rounds(run_dir.rounds_file)


@pytest.mark.parametrize("workers,shards", [(1, 0), (2, 0), (3, 0), (2, 5)])
def test_fedrun_matches_tff_single_process(workers, shards, source, algorithm, reference, tmp_path):
    config = dataclasses.replace(CONFIG, workers=workers, shards=shards)
    state, rounds = run_fedrun(config, source, algorithm, tmp_path)
    ref_state, ref_metrics = reference

    ours = state.global_model_weights.trainable
    theirs = ref_state.global_model_weights.trainable
    max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs))
    assert max_diff <= 1e-5
    # The weights moved: equality is not two untrained models agreeing.
    assert max(float(np.max(np.abs(w))) for w in ours) > 1e-3

    assert len(rounds) == CONFIG.rounds
    for record, expected in zip(rounds, ref_metrics):
        assert record["train"]["num_examples"] == expected["num_examples"]
        assert record["train"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert record["train"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
        expected_shards = shards or workers
        assert len(record["shards"]) == expected_shards
        assert {s["worker"] for s in record["shards"]} <= {f"local-{i}" for i in range(workers)}
        assert sum(len(s["clients"]) for s in record["shards"]) == CONFIG.clients_per_round
