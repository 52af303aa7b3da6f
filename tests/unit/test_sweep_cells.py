"""`fedrun sweep`'s pure parts, pinned without a worker: the grid file, its cells and their
configurations, each cell's numbers from its records, the spread over seeds, and the yardsticks
drawn beside the measurements (order statistics, over-selection's prediction)."""

import math
from pathlib import Path

import numpy as np
import pytest

from fedrun.config import read_grid_file
from fedrun.errors import FedrunError
from fedrun.loop.records import RoundRecord
from fedrun.sweep.figures import expected_max, predicted_reported
from fedrun.sweep.grid import CELLS, cell_config, grid_cells
from fedrun.sweep.results import cell_row, over_seeds


def grid_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_a_flat_grid_makes_every_combination_in_order(tmp_path):
    grid = read_grid_file(grid_file(tmp_path, "over_selection = [1.0, 1.3]\nseed = [0, 1, 2]\n"))
    cells = grid_cells(grid)
    assert [c.options for c in cells][:4] == [
        {"over_selection": 1.0, "seed": 0},
        {"over_selection": 1.0, "seed": 1},
        {"over_selection": 1.0, "seed": 2},
        {"over_selection": 1.3, "seed": 0},
    ]
    assert len(cells) == 6 and cells[4].name == "004-over_selection=1.3,seed=1"
    assert cells[4].without("seed") == (("over_selection", 1.3),)


def test_a_grid_with_tables_names_fields_by_section(tmp_path):
    grid = read_grid_file(
        grid_file(
            tmp_path, "[policy]\ndeadline_s = [0, 5.5]\n[aggregation]\nmode = ['sync', 'buffered-async']\n"
        )
    )
    assert [(info.key, values) for info, values in grid] == [
        ("deadline_s", [0.0, 5.5]),
        ("aggregation", ["sync", "buffered-async"]),
    ]


@pytest.mark.parametrize(
    "text,message",
    [
        ("seed = 3\n", "seed must list the values to try"),
        ("seed = []\n", "seed must list the values to try"),
        ("seeds = [1]\n", "unknown key 'seeds'"),
        ("seed = ['a']\n", "seed"),
        ("seed = [1]\n[policy]\ndropout = [0.1]\n", "mixes top-level keys"),
        ("seed = [1\n", "not valid TOML"),
    ],
)
def test_a_bad_grid_file_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(FedrunError, match=message):
        read_grid_file(grid_file(tmp_path, text))


def test_a_missing_grid_file_names_its_flag(tmp_path):
    with pytest.raises(FedrunError, match="check the --grid path"):
        read_grid_file(tmp_path / "nowhere.toml")


def test_a_cells_configuration_is_base_then_flags_then_its_values(tmp_path):
    (cell,) = grid_cells(read_grid_file(grid_file(tmp_path, "over_selection = [1.5]\n")))
    base = {"workload": {"rounds": 7, "epochs": 3}, "system": {"model": "lognormal"}}
    config = cell_config(base, {"epochs": 2}, cell, tmp_path / "sweep")
    assert (config.workload.rounds, config.workload.epochs, config.policy.over_selection) == (7, 2, 1.5)
    assert config.output.dir == tmp_path / "sweep" / CELLS / cell.name


def test_a_flag_the_grid_varies_is_refused(tmp_path):
    (cell,) = grid_cells(read_grid_file(grid_file(tmp_path, "seed = [1]\n")))
    with pytest.raises(FedrunError, match="--seed is varied by the grid"):
        cell_config({}, {"seed": 4}, cell, tmp_path)
    (out_cell,) = grid_cells(read_grid_file(grid_file(tmp_path, "out = ['x']\n")))
    with pytest.raises(FedrunError, match="cannot vary out"):
        cell_config({}, {}, out_cell, tmp_path)


def test_an_impossible_cell_is_named_in_the_error(tmp_path):
    (cell,) = grid_cells(read_grid_file(grid_file(tmp_path, "over_selection = [1.3]\n")))
    with pytest.raises(FedrunError, match="cell 000-over_selection=1.3: .*choose a --system-model"):
        cell_config({}, {}, cell, tmp_path)


def record(number: int, accuracy: float, clock: float, latency: float = 0.5) -> RoundRecord:
    return RoundRecord(
        round=number,
        latency_s=latency,
        start=number * 1.0,
        clients=4,
        examples=100,
        examples_trained=200,
        clients_per_s=8.0,
        examples_per_s=400.0,
        shards=[],
        bytes_to_workers=0,
        bytes_from_workers=0,
        workers=2,
        failures=[],
        train={"loss": 1.0, "accuracy": accuracy, "num_examples": 200},
        eval={
            "heldout": {"loss": 1.0, "accuracy": accuracy},
            "speed_q1": {"loss": 1.0, "accuracy": accuracy + 0.1},
            "speed_q4": {"loss": 1.0, "accuracy": accuracy - 0.1},
        },
        sim={"round_s": 10.0 * number, "clock_s": clock, "selected": 5, "reported": 4},
    )


def test_a_cells_row_is_read_from_its_records(tmp_path):
    (cell,) = grid_cells(read_grid_file(grid_file(tmp_path, "seed = [3]\n")))
    records = [record(1, 0.3, 10.0, latency=2.0), record(2, 0.65, 30.0), record(3, 0.6, 60.0)]
    row = cell_row(cell, records, target=0.6)
    assert row["seed"] == 3 and row["eval_group"] == "heldout"
    assert (row["final_accuracy"], row["best_accuracy"]) == (0.6, 0.65)
    assert (row["rounds_to_target"], row["sim_time_to_target_s"]) == (2, 30.0)
    assert row["wall_time_to_target_s"] == pytest.approx(2.0 + 0.5)  # round 2 starts at 2 s, lasts 0.5 s
    assert row["sim_round_p50_s"] == 20.0 and row["reported_fraction"] == pytest.approx(12 / 15)
    assert row["accuracy_slowest_quartile"] == pytest.approx(0.5)
    assert row["examples_per_s"] == pytest.approx(400 / 1.0)  # round 1 (tracing) left out
    unreached = cell_row(cell, records, target=0.9)
    assert math.isnan(unreached["sim_time_to_target_s"]) and math.isnan(unreached["rounds_to_target"])


def test_over_seeds_averages_each_combination():
    rows = [
        {"over_selection": f, "seed": s, "final_accuracy": a, "sim_time_to_target_s": t}
        for f, s, a, t in [
            (1.0, 0, 0.5, 10.0),
            (1.0, 1, 0.7, math.nan),
            (1.3, 0, 0.6, 4.0),
            (1.3, 1, 0.6, 6.0),
        ]
    ]
    for row in rows:
        row.update({c: 0.0 for c in ("rounds", "best_accuracy")})
    summary = {line["over_selection"]: line for line in over_seeds(rows, ["over_selection", "seed"])}
    assert summary[1.0]["seeds"] == 2 and summary[1.0]["final_accuracy_mean"] == pytest.approx(0.6)
    assert summary[1.0]["final_accuracy_std"] == pytest.approx(0.1)
    assert summary[1.0]["sim_time_to_target_s_mean"] == 10.0  # the seed that never got there is left out
    assert summary[1.3]["sim_time_to_target_s_mean"] == 5.0


def test_expected_max_is_the_order_statistic():
    assert expected_max([1, 2, 3, 4], 1) == pytest.approx(2.5)
    assert expected_max([1, 2, 3, 4], 2) == pytest.approx(50 / 16)  # sum of x_i ((i/4)^2 - ((i-1)/4)^2)
    draws = np.random.default_rng(0).lognormal(0, 0.6, 5000)
    sampled = np.mean([np.max(np.random.default_rng(i).choice(draws, 32)) for i in range(2000)])
    assert expected_max(draws, 32) == pytest.approx(sampled, rel=0.03)


def test_predicted_reported_fraction_against_a_hand_computation():
    assert predicted_reported(13, 10, 0.0) == pytest.approx(10 / 13)
    # two selected, one needed, each fails half the time: E[min(1, Bin(2, 0.5))] = 0.75, over 2
    assert predicted_reported(2, 1, 0.5) == pytest.approx(0.375)
    assert predicted_reported(5, 5, 1.0) == 0.0
