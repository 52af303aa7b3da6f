"""The figures of a sweep, each drawn only when the grid varies what it needs, with the published
yardsticks beside the measured numbers: the expected slowest of K clients (order statistics of
the clients' simulated times) for wait-for-all rounds, and the reported fraction the system
model predicts for over-selection."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from fedrun.config import RunConfig
from fedrun.loop.records import RoundRecord
from fedrun.loop.run_dir import RunDirectory
from fedrun.sweep.grid import Cell
from fedrun.sweep.results import SEED, accuracy_group

Cells = list[tuple[Cell, RunConfig]]


def expected_max(times: Sequence[float], k: int) -> float:
    """E[max of k draws] from the empirical distribution of `times` (order statistics: the i-th
    smallest of n is the maximum with probability (i/n)^k - ((i-1)/n)^k)."""
    ordered = np.sort(np.asarray(times, dtype=np.float64))
    n = len(ordered)
    if not n:
        return math.nan
    cdf = np.arange(n + 1) / n
    return float(np.sum(ordered * (cdf[1:] ** k - cdf[:-1] ** k)))


def predicted_reported(selected: int, target: int, fail: float) -> float:
    """Expected fraction of `selected` clients that count when each fails independently with
    probability `fail` and the first `target` to report count: E[min(target, Bin(selected,
    1 - fail))] / selected."""
    if fail <= 0.0:
        return min(target, selected) / selected
    if fail >= 1.0:
        return 0.0
    counts = np.arange(selected + 1)
    log_choose = np.array(
        [math.lgamma(selected + 1) - math.lgamma(c + 1) - math.lgamma(selected - c + 1) for c in counts]
    )
    probability = np.exp(log_choose + counts * math.log(1.0 - fail) + (selected - counts) * math.log(fail))
    return float(np.sum(np.minimum(counts, target) * probability) / selected)


def write_figures(
    out: Path, cells: Cells, rows: list[dict[str, Any]], records: list[list[RoundRecord]]
) -> list[str]:
    """Writes the figures the grid allows into `out` (`records`: each cell's rounds, in cell
    order); returns their file names."""
    varied = {key for key in rows[0] if key in cells[0][0].options and len({r[key] for r in rows}) > 1}
    configs = {cell.name: config for cell, config in cells}
    figures: dict[str, Figure] = {"accuracy_simulated_time.png": _accuracy_curves(cells, rows, records)}
    simulated = any(math.isfinite(r["sim_round_p50_s"]) for r in rows)
    if simulated and "clients_per_round" in varied:
        figures["round_time_vs_clients.png"] = _round_time_vs_clients(rows, configs, varied)
    if simulated and "over_selection" in varied:
        figures["over_selection.png"] = _over_selection(rows, configs, varied)
    if simulated and "deadline_s" in varied:
        figures["deadline.png"] = _deadline(rows, varied)
    if "aggregation" in varied:
        figures["sync_vs_async.png"] = _sync_vs_async(rows, varied)
    for name, figure in figures.items():
        FigureCanvasAgg(figure).print_png(out / name)
    return list(figures)


def _figure(columns: int, title: str) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(5.5 * columns, 4.5), dpi=110, layout="constrained")
    axes = list(figure.subplots(1, columns, squeeze=False)[0])
    for ax in axes:
        ax.grid(True, alpha=0.3)
    figure.suptitle(title)
    return figure, axes


def _log_ticks(ax: Any, values: Sequence[float]) -> None:
    """A log x axis labelled at the grid's own values."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(values))))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


def _label(row: dict[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{key}={row[key]}" for key in keys) or "all cells"


def _series(
    rows: list[dict[str, Any]], x: str, y: str, varied: set[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per combination of the other varied options (seeds pooled): x values, mean and std of y."""
    others = sorted(varied - {x, SEED})
    lines: dict[str, dict[Any, list[float]]] = {}
    for row in rows:
        lines.setdefault(_label(row, others), {}).setdefault(row[x], []).append(row[y])
    series = {}
    for label, points in lines.items():
        xs = sorted(points)
        values = [[v for v in points[x_] if math.isfinite(v)] for x_ in xs]
        means = np.array([np.mean(v) if v else np.nan for v in values])
        stds = np.array([np.std(v) if v else np.nan for v in values])
        series[label] = (np.array(xs, dtype=float), means, stds)
    return series


def _errorbars(
    ax: Any, rows: list[dict[str, Any]], x: str, y: str, varied: set[str], suffix: str = ""
) -> None:
    for label, (xs, means, stds) in _series(rows, x, y, varied).items():
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{label}{suffix}")


def _client_times(config: RunConfig) -> list[float]:
    return [
        line["total_s"] for line in RunDirectory(config.output.dir).clients.read_raw(on_torn=lambda n: None)
    ]


def _round_time_vs_clients(
    rows: list[dict[str, Any]], configs: dict[str, RunConfig], varied: set[str]
) -> Figure:
    figure, (ax,) = _figure(1, "Simulated round time against clients per round")
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        for label, (xs, means, _) in _series(rows, "clients_per_round", f"sim_round_p{q}_s", varied).items():
            ax.plot(xs, means, style, marker="o", label=f"p{q}: {label}")
    waiting = [
        r for r in rows if configs[r["cell"]].aggregation.mode == "sync" and not configs[r["cell"]].policy.any
    ]
    if waiting:  # order statistics: the slowest of K, from the clients' own simulated times
        by_k: dict[int, list[float]] = {}
        for row in waiting:
            k = configs[row["cell"]].workload.clients_per_round
            by_k.setdefault(k, []).append(expected_max(_client_times(configs[row["cell"]]), k))
        ks = sorted(by_k)
        ax.plot(ks, [np.mean(by_k[k]) for k in ks], "k-.", linewidth=2, label="E[max of K client times]")
    _log_ticks(ax, [r["clients_per_round"] for r in rows])
    ax.set(xlabel="clients per round K", ylabel="simulated round time (s)")
    ax.legend(fontsize="small")
    return figure


def _over_selection(rows: list[dict[str, Any]], configs: dict[str, RunConfig], varied: set[str]) -> Figure:
    figure, (reported, tta) = _figure(2, "Over-selection: who reports, and time to accuracy")
    _errorbars(reported, rows, "over_selection", "reported_fraction", varied)
    predicted: dict[float, list[float]] = {}
    for row in rows:
        config = configs[row["cell"]]
        times = np.asarray(_client_times(config))
        late = (
            float(np.mean(times > config.policy.deadline_s))
            if config.policy.deadline_s and len(times)
            else 0.0
        )
        fail = config.policy.dropout + (1 - config.policy.dropout) * late
        k = config.workload.clients_per_round
        predicted.setdefault(row["over_selection"], []).append(
            predicted_reported(config.clients_selected, k, fail)
        )
    xs = sorted(predicted)
    reported.plot(xs, [np.mean(predicted[x]) for x in xs], "k--", label="system model's prediction")
    reported.set(xlabel="over-selection factor", ylabel="fraction of selected clients counted")
    _errorbars(tta, rows, "over_selection", "sim_time_to_target_s", varied)
    tta.set(xlabel="over-selection factor", ylabel="simulated time to target accuracy (s)")
    for ax in (reported, tta):
        ax.legend(fontsize="small")
    return figure


def _deadline(rows: list[dict[str, Any]], varied: set[str]) -> Figure:
    figure, (accuracy, tta) = _figure(
        2, "Deadlines: accuracy of all and of the slowest devices, time to accuracy"
    )
    timed = [r for r in rows if r["deadline_s"]]
    _errorbars(accuracy, timed, "deadline_s", "final_accuracy", varied, " (all)")
    _errorbars(accuracy, timed, "deadline_s", "accuracy_slowest_quartile", varied, " (slowest quarter)")
    _errorbars(tta, timed, "deadline_s", "sim_time_to_target_s", varied)
    for row in (r for r in rows if not r["deadline_s"]):  # no deadline: a reference line
        accuracy.axhline(row["final_accuracy"], color="grey", linestyle=":", linewidth=1)
        tta.axhline(row["sim_time_to_target_s"], color="grey", linestyle=":", linewidth=1)
    accuracy.set(xlabel="deadline (simulated s); dotted: none", ylabel="final accuracy")
    tta.set(xlabel="deadline (simulated s); dotted: none", ylabel="simulated time to target accuracy (s)")
    for ax in (accuracy, tta):
        if ax.lines:
            ax.legend(fontsize="small")
    return figure


def _sync_vs_async(rows: list[dict[str, Any]], varied: set[str]) -> Figure:
    figure, (tta, speed) = _figure(2, "Synchronous vs buffered-async: time to accuracy and wall throughput")
    fedbuff = [r for r in rows if r["aggregation"] == "buffered-async"]
    x = "max_concurrency" if "max_concurrency" in varied else "aggregation"
    others = varied - {"aggregation"}
    if x == "max_concurrency":
        _errorbars(tta, fedbuff, x, "sim_time_to_target_s", others, " (buffered-async)")
        _errorbars(speed, fedbuff, x, "examples_per_s", others, " (buffered-async)")
        for label, (_, means, _) in _series(
            [r for r in rows if r["aggregation"] == "sync"], x, "sim_time_to_target_s", others - {x}
        ).items():
            tta.axhline(np.nanmean(means), color="grey", linestyle="--", label=f"sync: {label}")
        for label, (_, means, _) in _series(
            [r for r in rows if r["aggregation"] == "sync"], x, "examples_per_s", others - {x}
        ).items():
            speed.axhline(np.nanmean(means), color="grey", linestyle="--", label=f"sync: {label}")
        for ax in (tta, speed):
            _log_ticks(ax, [r[x] for r in fedbuff])
            ax.set(xlabel="buffered-async concurrency C")
    else:
        names = sorted({r["aggregation"] for r in rows})
        for ax, column in ((tta, "sim_time_to_target_s"), (speed, "examples_per_s")):
            values = [
                [r[column] for r in rows if r["aggregation"] == n and math.isfinite(r[column])] for n in names
            ]
            ax.bar(
                names,
                [np.mean(v) if v else np.nan for v in values],
                yerr=[np.std(v) if v else 0 for v in values],
            )
    tta.set(ylabel="simulated time to target accuracy (s)")
    speed.set(ylabel="wall examples/s")
    for ax in (tta, speed):
        if ax.lines:
            ax.legend(fontsize="small")
    return figure


def _accuracy_curves(cells: Cells, rows: list[dict[str, Any]], records: list[list[RoundRecord]]) -> Figure:
    """Accuracy against simulated time (rounds without a system model), one line per combination
    of the options but the seed, its seeds' range as a band."""
    figure, (ax,) = _figure(1, "Accuracy against simulated time, per cell (band: range over seeds)")
    options = [key for key in cells[0][0].options if key != SEED]
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    clock = True
    for row, cell_records in zip(rows, records):
        group = accuracy_group(cell_records)
        points = [
            (r.sim["clock_s"] if r.sim else r.round, r.eval[group]["accuracy"])
            for r in cell_records
            if group in r.eval
        ]
        clock &= all(r.sim is not None for r in cell_records)
        if points:
            xs, ys = (np.array(p, dtype=float) for p in zip(*points))
            curves.setdefault(_label(row, options), []).append((xs, ys))
    for label, runs in curves.items():
        end = min(xs[-1] for xs, _ in runs)
        grid = np.linspace(min(xs[0] for xs, _ in runs), end, 200) if end > 0 else np.array([0.0])
        values = np.array([np.interp(grid, xs, ys) for xs, ys in runs])
        (line,) = ax.plot(grid, values.mean(axis=0), label=label)
        if len(runs) > 1:
            ax.fill_between(grid, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    ends = [runs[0][0][-1] for runs in curves.values() if len(runs[0][0])]
    if clock and ends and min(ends) > 0 and max(ends) > 10 * min(ends):  # runs of very different lengths
        ax.set_xscale("log")
    ax.set(xlabel="simulated time (s)" if clock else "round", ylabel="accuracy")
    if ax.lines:
        ax.legend(fontsize="small")
    return figure
