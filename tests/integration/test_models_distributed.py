"""Models and optimizers on the distributed stack with real workers."""

import numpy as np
import pytest

from fedrun.data.synthetic import SyntheticDigits
from fedrun.learning.algorithm import algorithm_for
from tests.support.configs import flat_config
from tests.support.runs import max_weight_difference, reference_run, run_coordinator

pytestmark = pytest.mark.timeout(300)

CONFIG = flat_config(rounds=3, clients_per_round=6, epochs=1, population=60, eval_clients=6, progress=False)


@pytest.fixture(scope="module")
def source():
    return SyntheticDigits(population=CONFIG.data.population, heldout=CONFIG.eval.clients)


def test_custom_linear_follows_the_keras_linear_trajectory(source, tmp_path):
    runs = {}
    for model in ("linear", "custom-linear"):  # from the same weights (custom-linear's own: zeros)
        config = flat_config(CONFIG, model=model, model_init="glorot-uniform")
        runs[model] = run_coordinator(config, source, algorithm_for(config, source), tmp_path / model)
    (keras_state, keras_rounds), (custom_state, custom_rounds) = runs["linear"], runs["custom-linear"]
    assert max_weight_difference(custom_state, keras_state) <= 1e-5
    assert (
        max(float(np.max(np.abs(w))) for w in custom_state.global_model_weights.trainable) > 1e-3
    )  # it trained
    for ours, theirs in zip(custom_rounds, keras_rounds):
        assert ours["train"]["num_examples"] == theirs["train"]["num_examples"]
        assert ours["train"]["loss"] == pytest.approx(theirs["train"]["loss"], rel=1e-5)
        assert ours["train"]["accuracy"] == pytest.approx(theirs["train"]["accuracy"], abs=1e-6)
        for group in ("round_clients", "heldout"):
            assert ours["eval"][group]["loss"] == pytest.approx(theirs["eval"][group]["loss"], rel=1e-5)
            assert ours["eval"][group]["accuracy"] == pytest.approx(
                theirs["eval"][group]["accuracy"], abs=1e-6
            )


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "cnn", "rounds": 1, "clients_per_round": 4},
        {"server_optimizer": "adam", "server_lr": 0.01, "client_momentum": 0.9},
    ],
    ids=["cnn", "fedadam-momentum"],
)
def test_distributed_run_matches_tff_single_process(source, tmp_path, changes):
    config = flat_config(CONFIG, eval_every=0, **changes)
    algorithm = algorithm_for(config, source)
    state, rounds = run_coordinator(config, source, algorithm, tmp_path)
    ref_state, ref_metrics = reference_run(config, source, algorithm)
    assert max_weight_difference(state, ref_state) <= 1e-5
    for record, expected in zip(rounds, ref_metrics):
        assert record["train"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert np.isfinite(record["train"]["loss"])


def test_optimizers_change_the_trajectory(source, tmp_path):
    """FedAdam with client momentum ends elsewhere than plain FedAvg from the same start."""
    ends = []
    for changes in ({}, {"server_optimizer": "adam", "server_lr": 0.01, "client_momentum": 0.9}):
        config = flat_config(CONFIG, rounds=1, eval_every=0, **changes)
        ends.append(
            run_coordinator(config, source, algorithm_for(config, source), tmp_path / str(len(ends)))[0]
        )
    assert max_weight_difference(*ends) > 1e-3
