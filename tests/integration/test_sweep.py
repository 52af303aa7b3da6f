"""`fedrun sweep` as a user runs it: real local workers, real files, a real interrupt.

A 2x2 grid writes its table, summary and figures; every cell that can share a pool of workers
does (worker starts are counted in the workers' own logs); an interrupted sweep resumes without
redoing its finished cells.
"""

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.processes import fedrun

pytestmark = pytest.mark.timeout(600)

TINY = (
    "--rounds 2 --clients-per-round 4 --epochs 1 --population 40 --eval-clients 8 "
    "--system-model lognormal --no-tensorboard --no-progress".split()
)


def sweep(out: Path, grid: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        fedrun("sweep", "--grid", str(grid), "--out", str(out), *TINY, *args),
        capture_output=True,
        text=True,
        timeout=500,
        **kwargs,
    )


def worker_starts(out: Path) -> int:
    """Each local worker started writes one 'forwarding' line to its log in DIR/workers."""
    return sum(log.read_text().count("forwarding") for log in (out / "workers").glob("*.log"))


def table(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_a_two_by_two_grid_writes_its_table_and_figures_on_one_pool(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("over_selection = [1.0, 1.5]\nseed = [0, 1]\n")
    result = sweep(tmp_path / "out", grid, "--dropout", "0.2", "--target-accuracy", "0.3")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"

    rows = table(out / "sweep.csv")
    assert [(r["over_selection"], r["seed"]) for r in rows] == [
        ("1.0", "0"),
        ("1.0", "1"),
        ("1.5", "0"),
        ("1.5", "1"),
    ]
    for row in rows:
        records = (out / "cells" / row["cell"] / "rounds.jsonl").read_text().splitlines()
        assert row["rounds"] == "2" == str(len(records))
        assert 0 < float(row["final_accuracy"]) <= 1 and float(row["examples_per_s"]) > 0
        assert float(row["reported_fraction"]) <= 1
    # over-selection 1.5 selects 6 and counts at most 4
    assert all(float(r["reported_fraction"]) <= 4 / 6 + 1e-9 for r in rows if r["over_selection"] == "1.5")
    summary = table(out / "summary.csv")
    assert [(s["over_selection"], s["seeds"]) for s in summary] == [("1.0", "2"), ("1.5", "2")]
    assert len(json.loads((out / "sweep.jsonl").read_text().splitlines()[0])) == len(rows[0])
    for figure in ("accuracy_simulated_time.png", "over_selection.png"):
        assert (out / figure).stat().st_size > 10_000
    assert not (out / "deadline.png").exists()  # the grid does not vary the deadline
    pools = json.loads((out / "pools.json").read_text())
    assert len(pools) == 1 and len(pools[0]["cells"]) == 4
    assert worker_starts(out) == 2  # one pool of 2 workers served the 4 cells
    assert pools[0]["algorithm_builds"] == 2  # one per seed (its data); over-selection reuses it


def test_cells_that_need_other_workers_get_another_pool(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("workers = [1, 2]\nover_selection = [1.0, 1.5]\n")
    result = sweep(tmp_path / "out", grid)
    assert result.returncode == 0, result.stderr
    pools = json.loads((tmp_path / "out" / "pools.json").read_text())
    assert [(p["workers"], len(p["cells"])) for p in pools] == [(1, 2), (2, 2)]
    assert worker_starts(tmp_path / "out") == 3


def test_an_interrupted_sweep_resumes_without_redoing_finished_cells(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("seed = [0, 1, 2]\n")
    out = tmp_path / "out"
    args = ["--rounds", "6"]  # after TINY's 2: long enough to cut the second cell
    process = subprocess.Popen(
        fedrun("sweep", "--grid", str(grid), "--out", str(out), *TINY, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = out / "cells" / "001-seed=1"
    deadline = time.monotonic() + 400
    while not (second / "checkpoint.npz").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "rerun the same command to resume" in stderr
    first = out / "cells" / "000-seed=0" / "rounds.jsonl"
    kept = first.read_text(), first.stat().st_mtime_ns
    cut = len((second / "rounds.jsonl").read_text().splitlines())
    assert 1 <= cut < 6 and not (out / "sweep.csv").exists()

    resumed = sweep(out, grid, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert (first.read_text(), first.stat().st_mtime_ns) == kept  # the finished cell was not redone
    assert "cell 2/3 001-seed=1 (resumed)" in resumed.stdout
    rounds = [json.loads(line)["round"] for line in (second / "rounds.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3, 4, 5, 6]
    assert [r["rounds"] for r in table(out / "sweep.csv")] == ["6", "6", "6"]


def test_another_grid_into_the_same_folder_is_refused(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("seed = [0]\n")
    assert sweep(tmp_path / "out", grid).returncode == 0
    grid.write_text("seed = [5]\n")
    refused = sweep(tmp_path / "out", grid)
    assert refused.returncode == 2 and "holds another sweep" in refused.stderr


def test_a_cell_that_fails_is_recorded_and_the_others_run(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("client_lr = [1e38, 0.01]\n")  # the first diverges
    result = sweep(tmp_path / "out", grid)
    assert result.returncode == 1, result.stderr
    assert "1 cells stopped with an error" in result.stderr
    rows = table(tmp_path / "out" / "sweep.csv")
    assert rows[0]["status"].startswith("failed: training diverged")
    assert rows[1]["status"] == "finished" and rows[1]["rounds"] == "2"
    assert (tmp_path / "out" / "accuracy_simulated_time.png").exists()
