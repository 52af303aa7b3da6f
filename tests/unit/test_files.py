"""File sources as users bring them: partitioners, feature scales, the conversion cache. Files
are written here; the conversions run in this process (no worker)."""

import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fedrun.data.files import partition, scaling
from fedrun.data.files.npz import load_clients
from fedrun.data.keys import TEST, TRAIN
from fedrun.data.registry import SourceOptions, create_source
from fedrun.errors import FedrunError
from tests.support.data_files import write_npz

LABELS = np.repeat(np.arange(10), 200)  # 2,000 examples, 10 classes


@pytest.mark.parametrize("spec", ["iid:25", "dirichlet:25:0.5", "shards:25:2"])
def test_partitions_are_seeded_and_give_every_example_to_one_client(spec):
    owner = partition.partition(LABELS, spec, seed=3)
    assert owner.shape == LABELS.shape and owner.min() >= 0 and owner.max() < 25
    assert np.array_equal(owner, partition.partition(LABELS, spec, seed=3))
    assert not np.array_equal(owner, partition.partition(LABELS, spec, seed=4))


def test_iid_clients_are_equal_and_mixed():
    owner = partition.partition(LABELS, "iid:20", seed=0)
    assert set(np.bincount(owner)) == {100}
    assert all(len(np.unique(LABELS[owner == c])) >= 8 for c in range(20))


def test_dirichlet_with_small_alpha_gives_clients_few_labels():
    def labels_per_client(alpha):
        owner = partition.partition(LABELS, f"dirichlet:20:{alpha}", seed=1)
        return np.mean([len(np.unique(LABELS[owner == c])) for c in np.unique(owner)])

    assert labels_per_client(0.05) < 4 < 8 < labels_per_client(100.0)


def test_shards_give_each_client_s_label_sorted_shards():
    owner = partition.partition(LABELS, "shards:50:2", seed=0)  # 100 shards of 20 examples
    for client in range(50):
        assert np.sum(owner == client) == 40
        assert len(np.unique(LABELS[owner == client])) <= 2


@pytest.mark.parametrize(
    "spec", ["iid", "iid:0", "dirichlet:10", "dirichlet:10:-1", "shards:10:0", "random:5"]
)
def test_a_bad_partition_names_the_forms(spec):
    with pytest.raises(ValueError, match="iid:N|N must be"):
        partition.parse(spec)


def test_feature_scales():
    assert scaling.resolve("auto", np.zeros(3, np.uint8)) == 1 / 255
    assert scaling.resolve("auto", np.array([-300, 20], np.int16)) == 1 / 300
    assert scaling.resolve("auto", np.zeros(3, np.float32)) is None
    assert scaling.resolve("none", np.zeros(3, np.uint8)) is None
    assert scaling.resolve("0.5", np.zeros(3, np.float32)) == 0.5
    assert scaling.looks_unscaled(np.array([0.0, 255.0], np.float32), None)
    assert not scaling.looks_unscaled(np.array([0.0, 1.0], np.float32), None)


def uint8_file(path: Path, clients: int = 20, per_client: int = 10) -> Path:
    float_file = write_npz(path.with_suffix(".float.npz"), clients=clients, per_client=per_client)
    with np.load(float_file) as data:
        np.savez(path, x=np.round(data["x"] * 255).astype(np.uint8), y=data["y"], client=data["client"])
    return path


def test_uint8_images_are_stored_as_bytes_and_scaled_on_the_way_out(tmp_path, caplog):
    path = uint8_file(tmp_path / "images.npz")
    with caplog.at_level(logging.INFO, logger="fedrun.status"):
        source = create_source(SourceOptions(data=str(path)))
    assert source.scale == 1 / 255 and "features uint8 in [0, 255], scaled by 0.00392157" in caplog.text
    assert source.summary.startswith("features uint8")
    first = sum(f.stat().st_size for f in (source.folder / TRAIN).iterdir())
    assert first == sum(source.num_examples(c, TRAIN) for c in range(20)) * (28 * 28 + 4)  # a byte per pixel


def test_small_files_work_with_the_defaults_and_a_wrong_count_names_the_file(tmp_path):
    path = write_npz(tmp_path / "twenty.npz", clients=20, per_client=5)
    source = create_source(SourceOptions(data=str(path), heldout=-1))
    assert (source.population, len(source.heldout_clients())) == (18, 2)  # a tenth held out
    with pytest.raises(
        FedrunError, match="twenty.npz holds 20 clients with training examples, so 32 held-out"
    ):
        create_source(SourceOptions(data=str(path), heldout=32))


def test_nothing_is_written_beside_the_users_data(tmp_path):
    data = tmp_path / "read-only-data"
    data.mkdir()
    path = write_npz(data / "d.npz", clients=4, per_client=5)
    before = sorted(data.iterdir())
    create_source(SourceOptions(data=str(path)))
    assert sorted(data.iterdir()) == before


def test_a_damaged_or_other_version_conversion_is_rebuilt_never_trusted(tmp_path, caplog):
    path = write_npz(tmp_path / "d.npz", clients=4, per_client=5)
    source = create_source(SourceOptions(data=str(path)))
    truth = [source.num_examples(c, TEST) for c in range(4)]
    victim = source.folder / TRAIN / "1.bin"
    victim.write_bytes(victim.read_bytes()[:-7])  # a torn copy
    with caplog.at_level(logging.WARNING):
        again = create_source(SourceOptions(data=str(path)))
    assert "damaged" in caplog.text and again.folder == source.folder
    assert [again.num_examples(c, TEST) for c in range(4)] == truth
    assert victim.stat().st_size % (28 * 28 * 4 + 4) == 0
    (source.folder / "meta.json").write_text('{"version": 0}')
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        create_source(SourceOptions(data=str(path)))
    assert "from another fedrun version" in caplog.text


def test_a_file_larger_than_memory_is_converted_a_client_at_a_time(tmp_path):
    n, features = 200_000, 500  # x is 100 MB of uint8
    path = tmp_path / "large.npz"
    np.savez(path, x=np.zeros((n, features), np.uint8), y=np.arange(n) % 10, client=np.arange(n) % 400)
    arrays = load_clients(path, "", 0)
    assert isinstance(arrays.x, np.memmap)  # not read into memory
    tracemalloc.start()
    try:
        source = create_source(SourceOptions(data=str(path), heldout=0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert source.population == 400
    assert peak < 40 * 2**20, f"converting held {peak / 2**20:.0f} MiB at once"
