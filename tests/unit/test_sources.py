"""Data sources: what each file format yields, where it is found, and every error a user can cause.

Datasets are read eagerly here, with the same TF ops the workers run (no worker is started).
"""

import os
import re
import sqlite3
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fedrun.data.registry import SourceOptions, create_source
from fedrun.data.source import TEST, TRAIN
from fedrun.errors import FedrunError
from fedrun.selection.cohort import evaluation_groups, training_cohort
from fedrun.selection.sharding import make_shards
from tests.support.configs import flat_config
from tests.support.data_files import (
    emnist_example,
    write_emnist_h5,
    write_emnist_sqlite,
    write_npz,
    writer_examples,
)


def examples(source, client, split):
    x, y = source.client_examples(tf.constant(source.client_key(client, split)))
    return x.numpy(), y.numpy()


def by_name(source, name):
    return next(
        c for c in range(source.population + len(source.heldout_clients())) if source.client_name(c) == name
    )


# --- .npz files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("npz") / "digits.npz", clients=6, per_client=10)


def test_npz_clients_shape_and_classes_come_from_the_file(npz_file):
    source = create_source(SourceOptions(data=str(npz_file), heldout=2))
    assert source.population == 4 and len(source.heldout_clients()) == 2
    assert source.element_spec[0].shape == (28, 28)
    with np.load(npz_file) as data:
        assert source.num_classes == data["y"].max() + 1
    names = {source.client_name(c) for c in range(6)}
    assert names == {f"writer-{c}" for c in range(6)}


def test_npz_split_is_the_last_fifth_of_each_clients_examples_in_file_order(npz_file):
    source = create_source(SourceOptions(data=str(npz_file)))
    client = by_name(source, "writer-3")
    expected_x, expected_y = writer_examples(3, 10, 0)
    train_x, train_y = examples(source, client, TRAIN)
    test_x, test_y = examples(source, client, TEST)
    assert source.num_examples(client, TRAIN) == 8 and source.num_examples(client, TEST) == 2
    np.testing.assert_array_equal(train_x, expected_x[:8])
    np.testing.assert_array_equal(test_y, expected_y[8:])
    np.testing.assert_array_equal(np.concatenate([train_y, test_y]), expected_y)


def test_npz_with_a_test_file(tmp_path):
    train = write_npz(tmp_path / "train.npz", clients=3, per_client=12)
    test = tmp_path / "test.npz"
    x, y = writer_examples(1, 4, 1)
    np.savez(test, x=x, y=y, client=np.array(["writer-1"] * 4))
    source = create_source(SourceOptions(data=str(train), test_data=str(test)))
    assert [source.num_examples(by_name(source, f"writer-{c}"), TRAIN) for c in range(3)] == [12, 12, 12]
    assert [source.num_examples(by_name(source, f"writer-{c}"), TEST) for c in range(3)] == [0, 4, 0]
    np.testing.assert_array_equal(examples(source, by_name(source, "writer-1"), TEST)[1], y)


def test_npz_integer_client_ids_and_any_feature_shape(tmp_path):
    path = tmp_path / "vectors.npz"
    np.savez(
        path, x=np.arange(40, dtype=np.float64).reshape(20, 2), y=np.arange(20) % 3, client=np.arange(20) % 4
    )
    source = create_source(SourceOptions(data=str(path)))
    assert source.population == 4 and source.num_classes == 3
    assert source.element_spec[0].shape == (2,)
    x, _ = examples(source, by_name(source, "1"), TRAIN)
    np.testing.assert_array_equal(x, [[2, 3], [10, 11], [18, 19], [26, 27]])


def test_npz_conversion_is_cached_until_the_file_changes(tmp_path):
    path = write_npz(tmp_path / "d.npz", clients=2, per_client=5)
    first = create_source(SourceOptions(data=str(path))).folder
    written = (first / "meta.json").stat().st_mtime_ns
    assert create_source(SourceOptions(data=str(path))).folder == first
    assert (first / "meta.json").stat().st_mtime_ns == written  # not converted again
    write_npz(path, clients=3, per_client=5)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = create_source(SourceOptions(data=str(path)))
    assert changed.folder != first and changed.population == 3


def test_a_client_is_one_file_of_its_features_in_their_own_dtype_then_its_labels(tmp_path):
    x = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(8, 3)
    path = tmp_path / "bytes.npz"
    np.savez(path, x=x, y=np.arange(8) % 2, client=np.array([0, 0, 0, 0, 0, 1, 1, 1]))
    source = create_source(SourceOptions(data=str(path), feature_scale="none"))
    key = source.client_key(by_name(source, "0"), TRAIN)
    raw = (source.folder / key.split(":")[0]).read_bytes()
    assert raw == x[:4].tobytes() + np.array([0, 1, 0, 1], np.int32).tobytes()  # 4 train rows of 5
    assert source.folder.is_relative_to(Path(os.environ["XDG_CACHE_HOME"]) / "fedrun")
    features, labels = examples(source, by_name(source, "0"), TRAIN)
    np.testing.assert_array_equal(features, x[:4].astype(np.float32))


def npz_error(tmp_path, name="bad.npz", test_data="", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    with pytest.raises(FedrunError) as error:
        create_source(SourceOptions(data=str(path), test_data=test_data))
    return str(error.value)


GOOD = dict(x=np.zeros((4, 3)), y=np.array([0, 1, 0, 1]), client=np.array([0, 0, 1, 1]))


def test_npz_missing_file(tmp_path):
    with pytest.raises(FedrunError, match="does not exist"):
        create_source(SourceOptions(data=str(tmp_path / "nowhere.npz")))


def test_npz_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(FedrunError, match=f"{path} is not a readable .npz file"):
        create_source(SourceOptions(data=str(path)))


def test_npz_single_array_instead_of_archive(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(FedrunError, match="holds one array"):
        create_source(SourceOptions(data=str(path)))


@pytest.mark.parametrize(
    "arrays,problem",
    [
        ({"x": GOOD["x"], "y": GOOD["y"]}, "lacks array\\(s\\) client"),
        ({**GOOD, "y": np.array([0, 1, 0])}, "one entry per example"),
        ({**GOOD, "x": np.zeros((5, 3))}, "one entry per example"),
        ({**GOOD, "y": np.array([[0], [1], [0], [1]])}, "one entry per example"),
        ({**GOOD, "y": np.array([0.0, 1.0, 0.0, 1.0])}, "store the labels as integers"),
        ({**GOOD, "y": np.array([0, -1, 0, 1])}, "label -1 is negative"),
        ({**GOOD, "x": np.array(["a", "b", "c", "d"])}, "store the features as real numbers"),
        ({**GOOD, "client": np.array([0.5, 0.5, 1.0, 1.0])}, "integer or string client ids"),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0, int), "client": np.zeros(0, int)}, "holds no examples"),
    ],
)
def test_npz_misshaped_arrays(tmp_path, arrays, problem):
    message = npz_error(tmp_path, **arrays)
    assert "bad.npz" in message
    assert re.search(problem, message), message


def test_npz_test_labels_outside_the_training_labels(tmp_path):
    test = tmp_path / "test.npz"
    np.savez(test, x=np.zeros((2, 3)), y=np.array([1, 2]), client=np.array([0, 1]))
    message = npz_error(tmp_path, test_data=str(test), **GOOD)
    assert "test.npz: label(s) 2 never occur in" in message


def test_npz_test_file_with_other_feature_shape(tmp_path):
    test = tmp_path / "test.npz"
    np.savez(test, x=np.zeros((2, 4)), y=np.array([1, 0]), client=np.array([0, 1]))
    assert "examples have shape (4,) but those in" in npz_error(tmp_path, test_data=str(test), **GOOD)


def test_npz_test_clients_without_training_examples_are_held_out_and_evaluated(tmp_path):
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    np.savez(train, **GOOD)
    np.savez(test, x=np.zeros((3, 3)), y=np.array([1, 0, 1]), client=np.array([7, 7, 0]))
    source = create_source(SourceOptions(data=str(train), test_data=str(test)))
    assert source.population == 2  # with a test file, no training client is held out by default
    (stranger,) = source.heldout_clients()
    assert source.client_name(stranger) == "7"
    assert (source.num_examples(stranger, TRAIN), source.num_examples(stranger, TEST)) == (0, 2)


def test_too_many_heldout_clients(npz_file):
    with pytest.raises(FedrunError, match="leave none to train: lower --eval-clients"):
        create_source(SourceOptions(data=str(npz_file), heldout=6))


# --- federated EMNIST ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emnist_h5(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras-datasets")
    write_emnist_h5(folder, writers=8, train=10, test=4)
    return folder


def test_emnist_from_tffs_hdf5_files(emnist_h5):
    source = create_source(SourceOptions(data="emnist", data_dir=str(emnist_h5), heldout=2))
    assert (source.population, source.num_classes) == (6, 10)
    assert source.element_spec[0].shape == (28, 28)
    client = by_name(source, "f0005_05")
    pixels, labels = examples(source, client, TRAIN)
    with h5py.File(emnist_h5 / "fed_emnist_digitsonly_train.h5") as h5:
        np.testing.assert_array_equal(pixels, h5["examples/f0005_05/pixels"][()])
        np.testing.assert_array_equal(labels, h5["examples/f0005_05/label"][()])
    assert source.num_examples(client, TEST) == 4


def test_emnist_full_reads_the_62_class_files(tmp_path):
    write_emnist_h5(tmp_path, prefix="fed_emnist", writers=3, train=5, test=2)
    source = create_source(SourceOptions(data="emnist-full", data_dir=str(tmp_path)))
    assert (source.num_classes, source.population) == (62, 3)


def test_emnist_from_tff_087s_sqlite_file(tmp_path):
    path = write_emnist_sqlite(tmp_path, writers=5, train=6, test=3)
    # The fixture is TFF's format: TFF's own reader parses it.
    assert len(tff.simulation.datasets.SqlClientData(str(path), "digits_only_train").client_ids) == 5
    source = create_source(SourceOptions(data="emnist", data_dir=str(tmp_path)))
    assert source.folder.name.startswith("emnist_all.sqlite.")  # converted once, into the cache
    pixels, labels = examples(source, by_name(source, "f0002_00"), TEST)
    expected_x, expected_y = writer_examples(2, 3, 1)
    np.testing.assert_allclose(pixels, 1.0 - expected_x)
    np.testing.assert_array_equal(labels, expected_y)


def test_emnist_default_folders_are_tffs_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FedrunError) as error:
        create_source(SourceOptions(data="emnist"))
    message = str(error.value)
    assert f"{tmp_path}/.tff" in message and f"{tmp_path}/.keras/datasets" in message
    assert "emnist_all.sqlite" in message and "fed_emnist_digitsonly_train.h5" in message
    assert "tff.simulation.datasets.emnist.load_data()" in message and "--data-dir" in message
    write_emnist_h5(tmp_path / ".keras" / "datasets", writers=3, train=4, test=2)
    assert create_source(SourceOptions(data="emnist")).population == 3


def test_emnist_h5_needs_both_files(tmp_path):
    paths = write_emnist_h5(tmp_path, writers=2, train=3, test=1)
    paths["test"].unlink()
    with pytest.raises(FedrunError, match="fed_emnist_digitsonly_test.h5.*come in pairs"):
        create_source(SourceOptions(data="emnist", data_dir=str(tmp_path)))


def h5_error(tmp_path, build):
    write_emnist_h5(tmp_path, writers=2, train=3, test=1)
    with h5py.File(tmp_path / "fed_emnist_digitsonly_train.h5", "a") as h5:
        build(h5)
    with pytest.raises(FedrunError) as error:
        create_source(SourceOptions(data="emnist", data_dir=str(tmp_path)))
    assert "fed_emnist_digitsonly_train.h5" in str(error.value)
    return str(error.value)


def test_emnist_label_outside_the_variants_classes(tmp_path):
    def relabel(h5):
        h5["examples/f0001_01/label"][0] = 12

    assert "label 12 is outside 0..9 of --data emnist" in h5_error(tmp_path, relabel)


def test_emnist_empty_writer(tmp_path):
    def empty(h5):
        group = h5.create_group("examples/f0009_09")
        group["label"] = np.zeros(0, np.int32)
        group["pixels"] = np.zeros((0, 28, 28), np.float32)

    assert "examples/f0009_09 holds no examples" in h5_error(tmp_path, empty)


def test_emnist_misshaped_pixels(tmp_path):
    def reshape(h5):
        del h5["examples/f0000_00/pixels"]
        h5["examples/f0000_00/pixels"] = np.zeros((3, 28, 27), np.float32)

    assert "should be (n, 28, 28) and (n,)" in h5_error(tmp_path, reshape)


def test_emnist_missing_datasets_or_group(tmp_path):
    assert "lacks the datasets 'pixels' and 'label'" in h5_error(
        tmp_path / "a", lambda h5: h5.__delitem__("examples/f0000_00/label")
    )
    assert "has no group 'examples'" in h5_error(tmp_path / "b", lambda h5: h5.__delitem__("examples"))


def test_emnist_corrupt_h5(tmp_path):
    write_emnist_h5(tmp_path, writers=2, train=3, test=1)
    (tmp_path / "fed_emnist_digitsonly_test.h5").write_bytes(b"not hdf5")
    with pytest.raises(FedrunError, match="fed_emnist_digitsonly_test.h5 is not a readable HDF5 file"):
        create_source(SourceOptions(data="emnist", data_dir=str(tmp_path)))


def test_sqlite_file_with_a_clients_rows_scattered_keeps_them_in_row_order(tmp_path):
    path = tmp_path / "emnist_all.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB)")
        db.execute("CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, num_examples INTEGER)")
        pixels = np.zeros((28, 28), np.float32)
        for client in ["a", "b", "a"]:
            db.execute(
                "INSERT INTO examples VALUES ('digits_only_train', ?, ?)", (client, emnist_example(pixels, 1))
            )
    db.close()
    source = create_source(SourceOptions(data="emnist", data_dir=str(tmp_path), heldout=0))
    assert source.num_examples(by_name(source, "a"), TRAIN) == 2 and source.population == 2


def test_sqlite_file_that_is_not_client_data(tmp_path):
    (tmp_path / "emnist_all.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(FedrunError, match="is not a TFF client-data SQLite file"):
        create_source(SourceOptions(data="emnist", data_dir=str(tmp_path)))


def test_unknown_source_name():
    with pytest.raises(FedrunError, match="unknown data source 'mnist'.*synthetic, emnist, emnist-full.*npz"):
        create_source(SourceOptions(data="mnist"))


# --- cohorts over large populations ------------------------------------------------------------------


def test_cohort_cost_does_not_grow_with_the_population():
    """A round's sampling, keys and shards for a billion clients: O(K) time and memory."""
    source = create_source(SourceOptions(data="synthetic", population=10**9, heldout=32))
    tracemalloc.start()
    start = time.perf_counter()
    for round_num in range(1, 6):
        cohort = training_cohort(source, 0, round_num, 64)
        make_shards(cohort.sizes, 4)
        evaluation_groups(source, "round_clients,heldout,sample", 0, 32, cohort.clients)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(set(cohort.clients)) == 64 and max(cohort.clients) < 10**9
    assert elapsed < 2.0
    assert peak < 1_000_000  # bytes; one bool per client would be 1 GB


def test_evaluation_groups(npz_file):
    source = create_source(SourceOptions(data=str(npz_file), heldout=2))
    round_clients = training_cohort(source, 0, 1, 3).clients
    first = evaluation_groups(source, "round_clients,heldout,sample", 7, 3, round_clients)
    later = evaluation_groups(source, "sample", 7, 3, training_cohort(source, 0, 2, 3).clients)
    np.testing.assert_array_equal(first["round_clients"].clients, round_clients)
    np.testing.assert_array_equal(first["heldout"].clients, source.heldout_clients())
    np.testing.assert_array_equal(first["sample"].clients, later["sample"].clients)  # fixed over rounds
    assert set(first["sample"].clients) <= set(range(source.population))  # training clients only
    assert first["sample"].keys == [source.client_key(int(c), TEST) for c in first["sample"].clients]
    assert list(evaluation_groups(source, "heldout", 7, 3, round_clients)) == ["heldout"]


# --- configuration of data and evaluation -------------------------------------------------------------


@pytest.mark.parametrize(
    "values,message",
    [
        (
            {"eval_on": "heldout,everyone"},
            "eval_on must list distinct groups from round_clients, heldout, sample",
        ),
        ({"eval_on": "heldout,heldout"}, "eval_on must list distinct groups"),
        ({"eval_on": "sample", "eval_clients": 0}, "set eval_clients above 0"),
        ({"data_placement": "ray"}, "data_placement must be one of workers, coordinator, got 'ray'"),
    ],
)
def test_data_and_evaluation_configuration_errors(values, message):
    with pytest.raises(FedrunError, match=message):
        flat_config(**values)


def test_population_bounds_the_cohort_only_for_generated_data():
    with pytest.raises(FedrunError, match="exceeds the population"):
        flat_config(clients_per_round=50, population=40)
    assert flat_config(clients_per_round=50, population=40, data="emnist").data.source == "emnist"


def test_cli_refuses_a_cohort_larger_than_the_files_population(npz_file, tmp_path, capsys):
    from fedrun.cli import main

    code = main(
        [
            "run",
            "--data",
            str(npz_file),
            "--eval-clients",
            "2",
            "--clients-per-round",
            "5",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--no-tensorboard",
        ]
    )
    assert code == 2
    assert (
        "has 4 training clients, fewer than the 5 a round selects (--clients-per-round 5)"
        in capsys.readouterr().err
    )
