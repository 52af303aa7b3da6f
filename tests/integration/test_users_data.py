"""Users' own data through `fedrun run`, as they bring it: uint8 images, small files, centralized
data split into clients. Real workers, real files (written here)."""

import json
import subprocess

import numpy as np
import pytest

from tests.support.data_files import write_npz
from tests.support.processes import fedrun
from tests.support.processes import saved_weights as weights

pytestmark = pytest.mark.timeout(400)

RUN = "--rounds 3 --clients-per-round 6 --epochs 1 --client-lr 0.1 --no-progress --no-tensorboard".split()


def run(*args):
    result = subprocess.run(fedrun("run", *RUN, *args), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_uint8_images_train_to_the_model_of_the_same_images_prescaled(tmp_path):
    floats = write_npz(tmp_path / "floats.npz", clients=20, per_client=12)
    with np.load(floats) as data:
        pixels = np.round(data["x"] * 255).astype(np.uint8)
        np.savez(tmp_path / "bytes.npz", x=pixels, y=data["y"], client=data["client"])
        np.savez(
            tmp_path / "scaled.npz", x=pixels.astype(np.float32) / 255, y=data["y"], client=data["client"]
        )

    as_bytes = run("--data", str(tmp_path / "bytes.npz"), "--out", str(tmp_path / "bytes"))
    run("--data", str(tmp_path / "scaled.npz"), "--out", str(tmp_path / "scaled"))

    a, b = weights(tmp_path / "bytes"), weights(tmp_path / "scaled")
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) <= 1e-5
    assert "features uint8 in [0, 255], scaled by 0.00392157" in as_bytes.stderr
    recorded = (tmp_path / "bytes" / "config.toml").read_text()
    assert f'feature_scale = "{1 / 255!r}"' in recorded  # the scale used, not "auto"


def test_a_20_client_file_with_a_test_file_of_new_clients_runs_with_the_defaults(tmp_path):
    train = write_npz(tmp_path / "train.npz", clients=20, per_client=10)
    test = write_npz(tmp_path / "test.npz", clients=3, per_client=5, first_writer=18)  # 2 known, 1 new
    run("--data", str(train), "--test-data", str(test), "--out", str(tmp_path / "out"))

    rounds = [json.loads(line) for line in (tmp_path / "out" / "rounds.jsonl").read_text().splitlines()]
    assert rounds[-1]["eval"]["heldout"]["num_examples"] == 5  # writer-20: only in the test file


def test_centralized_data_is_partitioned_and_the_partition_and_label_mix_are_kept(tmp_path):
    floats = write_npz(tmp_path / "floats.npz", clients=10, per_client=60)
    with np.load(floats) as data:
        np.savez(tmp_path / "central.npz", x=data["x"], y=data["y"])  # no client array
    run(
        "--data",
        str(tmp_path / "central.npz"),
        "--partition",
        "dirichlet:30:0.3",
        "--out",
        str(tmp_path / "out"),
    )

    with np.load(tmp_path / "out" / "partition.npz") as saved, np.load(tmp_path / "central.npz") as data:
        assert saved["client"].shape == data["y"].shape
    mix = json.loads((tmp_path / "out" / "label_mix.json").read_text())
    assert len(mix["clients"]) == len(mix["labels"]) and all(len(counts) == 10 for counts in mix["labels"])
    report = subprocess.run(
        fedrun("report", str(tmp_path / "out")), capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "out" / "report" / "label_mix.png").stat().st_size > 1000
