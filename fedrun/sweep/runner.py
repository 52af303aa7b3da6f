"""Runs a sweep's cells one after another on as few pools of workers as their settings allow:
cells with the same worker settings share one pool, started once, and reuse its data sources and
built algorithms. A finished cell is kept; a cut one resumes from its checkpoint."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cluster import Worker
from fedrun.atomic_write import write_bytes_atomically
from fedrun.config import FieldInfo, RunConfig, config_toml
from fedrun.errors import FedrunError
from fedrun.loop.records import RoundRecord
from fedrun.loop.run_dir import WORKERS, RunDirectory
from fedrun.sweep.grid import Cell, cell_config, grid_cells
from fedrun.sweep.results import cell_row, over_seeds, write_lines, write_table

_STATUS = logging.getLogger("fedrun.status")

PLAN = "sweep.json"  # the cells' configurations: a rerun of another sweep into DIR is refused
POOLS = "pools.json"  # each pool started: its cells, seconds to start, algorithm builds


@dataclass(frozen=True)
class SweepSpec:
    base: dict[str, dict[str, Any]]  # the --config file's values
    flags: dict[str, Any]  # run options given as flags
    grid: list[tuple[FieldInfo, list[Any]]]
    out: Path
    target_accuracy: float = 0.6

    @property
    def cells(self) -> list[tuple[Cell, RunConfig]]:
        return [(cell, cell_config(self.base, self.flags, cell, self.out)) for cell in grid_cells(self.grid)]


@dataclass
class SweepOutcome:
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    pools: list[dict[str, Any]] = field(default_factory=list)  # pools started by this session
    figures: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # cells that stopped with an error, and why


def run_sweep(
    spec: SweepSpec,
    should_stop: Callable[[], None] = lambda: None,
    figures: Callable[
        [Path, list[tuple[Cell, RunConfig]], list[dict[str, Any]], list[list[RoundRecord]]], list[str]
    ]
    | None = None,
) -> SweepOutcome:
    """Runs every unfinished cell, then writes sweep.csv, sweep.jsonl, summary.csv and the
    figures (`figures(out, cells, rows, records)` returns the files it wrote)."""
    from fedrun.loop.simulation import SharedPool, simulate, started_workers  # loads TensorFlow

    cells = spec.cells
    _claim(spec.out, cells)
    todo = [(cell, config) for cell, config in cells if not _finished(config)]
    if len(todo) < len(cells):
        _STATUS.info(
            "%d of %d cells already finished in %s: kept", len(cells) - len(todo), len(cells), spec.out
        )
    progress = SweepProgress(len(cells), sum(_rounds_left(config) for _, config in todo))
    pools = []
    failures: dict[str, str] = {}  # cell -> why it stopped, this session
    try:
        for group in _by_pool(todo):
            settings = group[0][1]
            _STATUS.info(
                "starting %d %s workers for %d cells",
                settings.workers.count,
                settings.workers.backend,
                len(group),
            )
            started = time.monotonic()
            with started_workers(settings, spec.out / WORKERS) as backend:
                pool = SharedPool(backend)
                record = {
                    "cells": [c.name for c, _ in group],
                    "workers": settings.workers.count,
                    "start_s": time.monotonic() - started,
                }
                pools.append(record)
                for cell, config in group:
                    should_stop()
                    resume = RunDirectory(config.output.dir).has_checkpoint
                    progress.begin(cell, resume)
                    try:
                        simulate(config, [progress], resume=resume, should_stop=should_stop, pool=pool)
                    except FedrunError as error:  # e.g. a learning rate that diverges: the grid goes on
                        failures[cell.name] = str(error)
                        progress.failed(cell, error)
                per_build = pool.build_s / max(pool.builds, 1)
                record.update(
                    algorithm_builds=pool.builds,
                    build_s=pool.build_s,
                    # against a fresh pool and a fresh build for every cell
                    saved_s_estimate=(len(group) - 1) * record["start_s"]
                    + (len(group) - pool.builds) * per_build,
                )
    finally:
        progress.close()
        _append_pools(spec.out, pools)
    records = [_records(config) for _, config in cells]  # read once, for the table and the figures
    rows = [
        {
            **cell_row(cell, cell_records, spec.target_accuracy),
            "status": _status(config, failures.get(cell.name)),
        }
        for (cell, config), cell_records in zip(cells, records)
    ]
    options = [info.key for info, _ in spec.grid]
    summary = over_seeds(rows, options)
    write_table(spec.out / "sweep.csv", rows)
    write_lines(spec.out / "sweep.jsonl", rows)
    write_table(spec.out / "summary.csv", summary)
    written = figures(spec.out, cells, rows, records) if figures else []
    return SweepOutcome(rows, summary, pools, written, failures)


def _claim(out: Path, cells: list[tuple[Cell, RunConfig]]) -> None:
    """DIR holds this sweep or none: a different grid or base there would mix two sweeps' cells."""
    plan = {cell.name: config_toml(config) for cell, config in cells}
    path = out / PLAN
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise FedrunError(f"{path} is unreadable ({e}): use another --out") from None
        if earlier != plan:
            raise FedrunError(
                f"{out} holds another sweep (its cells or their options differ from this one's): "
                "rerun that sweep's command to resume it, or choose another --out"
            )
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FedrunError(
            f"cannot create the sweep directory {out} ({e.strerror}): choose another --out"
        ) from None
    write_bytes_atomically(path, json.dumps(plan, indent=1).encode())


def _records(config: RunConfig) -> list[RoundRecord]:
    """The cell's rounds so far (none if it stopped before its folder was made)."""
    rounds = RunDirectory(config.output.dir).rounds
    return rounds.read(on_torn=lambda number: None) if rounds.path.exists() else []


def _status(config: RunConfig, failure: str | None) -> str:
    """'finished', 'failed: why' (its rounds so far are in the table), or 'incomplete'."""
    if failure is not None:
        return f"failed: {failure}"
    return "finished" if _finished(config) else "incomplete"


def _finished(config: RunConfig) -> bool:
    run_dir = RunDirectory(config.output.dir)
    return run_dir.weights_file.exists() and len(run_dir.rounds.read_raw()) >= config.workload.rounds


def _rounds_left(config: RunConfig) -> int:
    run_dir = RunDirectory(config.output.dir)
    done = len(run_dir.rounds.read_raw(on_torn=lambda number: None)) if run_dir.has_checkpoint else 0
    return config.workload.rounds - done


def _by_pool(cells: list[tuple[Cell, RunConfig]]) -> list[list[tuple[Cell, RunConfig]]]:
    """Cells grouped by the workers they need (in order of first appearance)."""
    groups: dict[Any, list[tuple[Cell, RunConfig]]] = {}
    for cell, config in cells:
        groups.setdefault(config.cluster, []).append((cell, config))
    return list(groups.values())


def _append_pools(out: Path, pools: list[dict[str, Any]]) -> None:
    if not pools:
        return
    path = out / POOLS
    earlier = json.loads(path.read_text()) if path.exists() else []
    write_bytes_atomically(path, json.dumps(earlier + pools, indent=1).encode())


class SweepProgress:
    """One progress bar over every round of every cell still to run, and a line per cell."""

    def __init__(self, cells: int, rounds: int):
        self._cells = cells
        self._bar = tqdm(total=rounds, unit="round", disable=None)
        self._cell: Cell | None = None
        self._last: RoundRecord | None = None

    def begin(self, cell: Cell, resume: bool) -> None:
        self._cell = cell
        self._bar.set_description(f"cell {cell.index + 1}/{self._cells}")
        self._bar.write(f"cell {cell.index + 1}/{self._cells} {cell.name}{' (resumed)' if resume else ''}")

    def failed(self, cell: Cell, error: Exception) -> None:
        self._bar.write(f"  cell {cell.name} stopped: {error}")

    def on_start(self, config: RunConfig, workers: list[Worker]) -> None:
        self._last = None

    def on_round(self, record: RoundRecord) -> None:
        self._last = record
        self._bar.update()

    def on_end(self) -> None:
        record = self._last
        if record is None:
            return
        accuracy = (
            "; ".join(f"{group} {m['accuracy']:.4f}" for group, m in record.eval.items()) or "not evaluated"
        )
        clock = f", simulated {record.sim['clock_s']:.1f} s" if record.sim else ""
        self._bar.write(f"  round {record.round}: accuracy {accuracy}{clock}")

    def close(self) -> None:
        self._bar.close()
