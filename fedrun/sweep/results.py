"""A sweep's results: one row per cell read back from its run folder, and the mean and spread of
each number over seeds for every combination of the other options."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedrun.loop.records import RoundRecord
from fedrun.observe.summary import running_time
from fedrun.sweep.grid import Cell

# The group a cell's accuracy is read on: the first of these its runs evaluate.
ACCURACY_GROUPS = ("heldout", "sample", "round_clients")
SEED = "seed"
# What each row holds besides the cell's options, in the table's column order.
COLUMNS = (
    "rounds",
    "eval_group",
    "final_accuracy",
    "best_accuracy",
    "rounds_to_target",
    "sim_time_to_target_s",
    "wall_time_to_target_s",
    "sim_round_p50_s",
    "sim_round_p95_s",
    "sim_round_p99_s",
    "reported_fraction",
    "accuracy_fastest_quartile",
    "accuracy_slowest_quartile",
    "examples_per_s",
    "sim_clock_s",
    "wall_s",
)


def accuracy_group(records: Sequence[RoundRecord]) -> str | None:
    groups = {g for r in records for g in r.eval}
    return next((g for g in ACCURACY_GROUPS if g in groups), min(groups, default=None))


def cell_row(cell: Cell, records: Sequence[RoundRecord], target: float) -> dict[str, Any]:
    """The cell's numbers (NaN where the run has none: no system model, never evaluated, target
    not reached)."""
    group = accuracy_group(records)
    wall = running_time(records)
    evaluated = [(r, t) for r, t in zip(records, wall) if group in r.eval]
    accuracy = [r.eval[group]["accuracy"] for r, _ in evaluated]
    hit = next(((r, t) for (r, t), a in zip(evaluated, accuracy) if a >= target), None)
    simulated = [r.sim for r in records if r.sim is not None]
    round_s = [sim["round_s"] for sim in simulated]
    quartiles = next((r.eval for r in reversed(records) if "speed_q1" in r.eval), {})
    timed = records[1:] or records  # the first round traces the computations
    latency = sum(r.latency_s for r in timed)
    nan = math.nan
    return {
        **cell.options,
        "cell": cell.name,
        "rounds": len(records),
        "eval_group": group or "",
        "final_accuracy": accuracy[-1] if accuracy else nan,
        "best_accuracy": max(accuracy, default=nan),
        "rounds_to_target": hit[0].round if hit else nan,
        "sim_time_to_target_s": hit[0].sim["clock_s"] if hit and hit[0].sim else nan,
        "wall_time_to_target_s": hit[1] if hit else nan,
        **{f"sim_round_p{q}_s": float(np.percentile(round_s, q)) if round_s else nan for q in (50, 95, 99)},
        "reported_fraction": (
            sum(s["reported"] for s in simulated) / max(sum(s["selected"] for s in simulated), 1)
            if simulated
            else nan
        ),
        "accuracy_fastest_quartile": quartiles.get("speed_q1", {}).get("accuracy", nan),
        "accuracy_slowest_quartile": quartiles.get("speed_q4", {}).get("accuracy", nan),
        "examples_per_s": sum(r.examples_trained for r in timed) / latency if latency else nan,
        "sim_clock_s": simulated[-1]["clock_s"] if simulated else nan,
        "wall_s": wall[-1] if wall else nan,
    }


def over_seeds(rows: Sequence[dict[str, Any]], options: Sequence[str]) -> list[dict[str, Any]]:
    """One row per combination of the options but the seed: each number's mean and standard
    deviation over its seeds (NaN runs left out), and how many seeds it had."""
    shared = [key for key in options if key != SEED]
    combos: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        combos.setdefault(tuple(row[key] for key in shared), []).append(row)
    summary = []
    for combo, members in combos.items():
        line: dict[str, Any] = {**dict(zip(shared, combo)), "seeds": len(members)}
        for column in COLUMNS:
            values = [m[column] for m in members if isinstance(m.get(column), (int, float))]
            finite = [v for v in values if math.isfinite(v)]
            if values:
                line[f"{column}_mean"] = float(np.mean(finite)) if finite else math.nan
                line[f"{column}_std"] = float(np.std(finite)) if finite else math.nan
        summary.append(line)
    return summary


def write_table(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """A CSV with every row's keys as columns (in first-seen order)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _plain(value) for key, value in row.items()})


def write_lines(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n" for row in rows))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value) if isinstance(value, Path) else value
