"""Client data built on real workers from keys: what a round sends, and that results do not depend
on where the data is built. Files are small and written here in the formats users bring."""

import numpy as np
import pytest

from fedrun.data.registry import SourceOptions, create_source
from fedrun.learning.algorithm import algorithm_for
from tests.support.configs import flat_config
from tests.support.data_files import write_emnist_h5, write_emnist_sqlite, write_npz
from tests.support.runs import max_weight_difference, reference_run, run_coordinator

pytestmark = pytest.mark.timeout(300)

CONFIG = flat_config(rounds=2, clients_per_round=4, epochs=1, eval_clients=0, eval_every=0, progress=False)


@pytest.fixture(scope="module")
def npz_runs(tmp_path_factory):
    """Clients holding 50 or 500 examples, trained with keys (workers) and with shipped tensors."""
    folder = tmp_path_factory.mktemp("npz")
    runs = {}
    for per_client, placement in [(50, "workers"), (500, "workers"), (500, "coordinator")]:
        path = folder / f"clients-{per_client}.npz"
        if not path.exists():
            write_npz(path, clients=6, per_client=per_client)
        config = flat_config(CONFIG, data=str(path), data_placement=placement)
        source = create_source(SourceOptions(data=config.data.source))
        runs[per_client, placement] = run_coordinator(
            config, source, algorithm_for(config, source), folder / f"run-{per_client}-{placement}"
        )
    return runs


def test_bytes_to_workers_do_not_grow_with_client_data(npz_runs):
    # Sorted: a round that sends a worker a computation for the first time costs more, and which
    # round that is depends on dispatch timing, not on the data.
    small = sorted(r["bytes_to_workers"] for r in npz_runs[50, "workers"][1])
    large = sorted(r["bytes_to_workers"] for r in npz_runs[500, "workers"][1])
    for a, b in zip(small, large):
        assert abs(a - b) / a < 0.03, (small, large)
    # The large clients really trained on ten times the examples.
    examples = [r["train"]["num_examples"] for r in npz_runs[500, "workers"][1]]
    assert examples == [4 * 400 * CONFIG.workload.epochs] * CONFIG.workload.rounds


def test_shipped_tensors_cost_what_the_data_weighs(npz_runs):
    ids = [r["bytes_to_workers"] for r in npz_runs[500, "workers"][1]]
    tensors = [r["bytes_to_workers"] for r in npz_runs[500, "coordinator"][1]]
    examples_bytes = 4 * 400 * 28 * 28 * 4  # a round's training pixels as float32
    for a, b in zip(ids, tensors):
        assert b > a + examples_bytes


def test_coordinator_placement_gives_the_workers_placement_result(npz_runs):
    on_workers, shipped = npz_runs[500, "workers"], npz_runs[500, "coordinator"]
    assert max_weight_difference(on_workers[0], shipped[0]) <= 1e-5
    for ours, theirs in zip(on_workers[1], shipped[1]):
        assert ours["train"]["num_examples"] == theirs["train"]["num_examples"]
        assert ours["train"]["loss"] == pytest.approx(theirs["train"]["loss"], rel=1e-5)
        assert ours["train"]["accuracy"] == pytest.approx(theirs["train"]["accuracy"], abs=1e-6)


@pytest.fixture(scope="module")
def emnist_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras-datasets")
    write_emnist_h5(folder, writers=30, train=40, test=10)
    return folder


def test_emnist_h5_on_workers_matches_tff_single_process(emnist_folder, tmp_path):
    config = flat_config(
        CONFIG,
        data="emnist",
        data_dir=str(emnist_folder),
        eval_clients=4,
        eval_every=1,
        eval_on="round_clients,heldout,sample",
    )
    source = create_source(SourceOptions(data="emnist", data_dir=str(emnist_folder), heldout=4))
    algorithm = algorithm_for(config, source)
    state, rounds = run_coordinator(config, source, algorithm, tmp_path)
    ref_state, ref_metrics = reference_run(config, source, algorithm)
    assert max_weight_difference(state, ref_state) <= 1e-5
    assert [r["train"]["num_examples"] for r in rounds] == [m["num_examples"] for m in ref_metrics]
    for record in rounds:
        assert set(record["eval"]) == {"round_clients", "heldout", "sample"}
        assert record["eval"]["heldout"]["num_examples"] == 4 * 10
        assert record["eval"]["sample"]["num_examples"] == 4 * 10
        assert record["eval"]["round_clients"]["num_examples"] == config.workload.clients_per_round * 10
    assert {s for r in rounds for sh in r["shards"] for s in sh["clients"]} <= {
        source.client_name(c) for c in range(source.population)
    }  # held-out writers never train


def test_emnist_tff_087_sqlite_trains_on_workers(tmp_path):
    write_emnist_sqlite(tmp_path / "tff-cache", writers=10, train=20, test=5)
    config = flat_config(CONFIG, rounds=1, data="emnist", data_dir=str(tmp_path / "tff-cache"))
    source = create_source(SourceOptions(data=config.data.source, data_dir=config.data.data_dir))
    state, rounds = run_coordinator(config, source, algorithm_for(config, source), tmp_path / "run")
    assert rounds[0]["train"]["num_examples"] == config.workload.clients_per_round * 20
    assert max(float(np.max(np.abs(w))) for w in state.global_model_weights.trainable) > 1e-4
