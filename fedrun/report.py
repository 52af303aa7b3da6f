"""`fedrun report DIR`: plots and a markdown summary of a run, finished or still going.

Reads only DIR/rounds.jsonl (and DIR/config.toml when present), so it can run while the
coordinator appends rounds.
"""

import json
import logging
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from fedrun.errors import FedrunError
from fedrun.results import RoundRecord, ShardRecord

log = logging.getLogger(__name__)

PERCENTILES = (50, 95, 99)
_PERCENTILE_COLORS = {50: "tab:green", 95: "tab:orange", 99: "tab:red"}
_TRAIN_LABEL = "train (clients, during local training)"
_EVAL_LABELS = {"round_clients": "eval: the round's clients", "heldout": "eval: held-out clients"}


def load_rounds(path: Path) -> list[RoundRecord]:
    """The rounds of a rounds.jsonl; a torn last line (a round being appended) is skipped with a warning."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise FedrunError(f"{path} does not exist: give the --out directory of a fedrun run") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            records.append(RoundRecord(**{**raw, "shards": [ShardRecord(**s) for s in raw["shards"]]}))
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            if number < len(lines):
                raise FedrunError(f"{path} line {number} is not a round record of this fedrun version ({e}): "
                                  f"the file is damaged or from an older fedrun") from None
            log.warning("skipped the incomplete last line of %s (a round still being written)", path)
    return records


def latency_percentiles(records: Sequence[RoundRecord]) -> dict[int, float]:
    return {q: float(np.percentile([r.latency_s for r in records], q)) for q in PERCENTILES}


def running_time(records: Sequence[RoundRecord]) -> list[float]:
    """Seconds of running time at the end of each round (training and evaluation). A resumed run's
    clock starts again at 0, so each session continues from the previous one's last round."""
    times: list[float] = []
    offset = 0.0
    for previous, record in zip([None, *records], records):
        if previous is not None and record.start < previous.start:
            offset = times[-1]
        times.append(offset + record.start + record.latency_s + record.eval_latency_s)
    return times


def worker_timeline(record: RoundRecord) -> dict[str, list[tuple[float, float, ShardRecord]]]:
    """Per worker, its shards as (start, duration, shard), in seconds since the round started."""
    timeline: dict[str, list[tuple[float, float, ShardRecord]]] = {}
    for shard in sorted(record.shards, key=lambda s: s.start):
        timeline.setdefault(shard.worker, []).append((shard.start - record.start, shard.end - shard.start, shard))
    return timeline


def summary_rows(records: Sequence[RoundRecord], config: dict[str, Any]) -> list[tuple[str, str]]:
    """The key numbers of a run, as (what, value) rows."""
    last = records[-1]
    pct = latency_percentiles(records)
    latencies = [r.latency_s for r in records]
    planned = f" of {config['rounds']} planned" if "rounds" in config else ""
    rows = [
        ("rounds in rounds.jsonl", f"{len(records)}{planned}"),
        ("running time to the end of the last round", f"{running_time(records)[-1]:.1f} s"),
        ("round latency p50 / p95 / p99", " / ".join(f"{pct[q]:.3f}" for q in PERCENTILES) + " s"),
        ("round latency min / max", f"{min(latencies):.3f} / {max(latencies):.3f} s"),
        ("first round latency (includes tracing)", f"{latencies[0]:.3f} s"),
        ("examples trained (all epochs)", f"{sum(r.examples_trained for r in records)}"),
        ("examples/s median", f"{np.median([r.examples_per_s for r in records]):.0f}"),
        ("clients/s median", f"{np.median([r.clients_per_s for r in records]):.1f}"),
        ("bytes to / from workers, all rounds",
         f"{sum(r.bytes_to_workers for r in records)} / {sum(r.bytes_from_workers for r in records)}"),
        ("worker failures (their shards ran again)", f"{sum(len(r.failures) for r in records)}"),
        (f"train loss / accuracy (round {last.round})", f"{last.train['loss']:.4f} / {last.train['accuracy']:.4f}"),
    ]
    evaluated = [r for r in records if r.eval]
    if evaluated:
        for group, metrics in evaluated[-1].eval.items():
            rows.append((f"eval {group} loss / accuracy (round {evaluated[-1].round})",
                         f"{metrics['loss']:.4f} / {metrics['accuracy']:.4f}"))
        for group in evaluated[-1].eval:
            best = max((r for r in evaluated if group in r.eval), key=lambda r: r.eval[group]["accuracy"])
            rows.append((f"best eval {group} accuracy",
                         f"{best.eval[group]['accuracy']:.4f} (round {best.round})"))
    for key in ("workers", "clients_per_round", "epochs", "model", "data"):
        if key in config:
            rows.append((f"config {key}", f"{config[key]}"))
    return rows


def write_report(run_dir: Path, round_num: int | None = None, out: Path | None = None) -> Path:
    """Writes the PNGs and summary.md into `out` (default DIR/report) and returns summary.md's path."""
    records = load_rounds(run_dir / "rounds.jsonl")
    if not records:
        raise FedrunError(f"no round has finished yet in {run_dir / 'rounds.jsonl'}: "
                          f"try again after the first round")
    by_number = {r.round: r for r in records}
    chosen = by_number.get(records[-1].round if round_num is None else round_num)
    if chosen is None:
        raise FedrunError(f"round {round_num} is not in {run_dir / 'rounds.jsonl'}: choose --round between "
                          f"{records[0].round} and {records[-1].round}")
    config_file = run_dir / "config.toml"
    config = tomllib.loads(config_file.read_text()) if config_file.exists() else {}
    out = out or run_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FedrunError(f"cannot create the report directory {out} ({e.strerror}): "
                          f"choose another --out") from None

    workers = sorted({s.worker for r in records for s in r.shards})
    plots = {
        "accuracy.png": _learning_curves(records, "accuracy", "accuracy (fraction correct)"),
        "loss.png": _learning_curves(records, "loss", "loss (cross-entropy)"),
        "latency.png": _latency_per_round(records),
        "latency_cdf.png": _latency_cdf(records),
        f"shards_round_{chosen.round}.png": _gantt(chosen, workers),
    }
    for name, figure in plots.items():
        FigureCanvasAgg(figure).print_png(out / name)

    rows = summary_rows(records, config)
    lines = [f"# fedrun report: {run_dir}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
             "## Plots", ""]
    lines += [f"![{name.removesuffix('.png')}]({name})" for name in plots]
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n")
    return summary


def _figure(columns: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(11, 4.5), dpi=110, layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure, list(axes)


def _learning_curves(records: Sequence[RoundRecord], metric: str, ylabel: str) -> Figure:
    figure, (by_round, by_time) = _figure(columns=2)
    figure.suptitle(f"{metric.capitalize()} during training and on evaluation")
    times = dict(zip((r.round for r in records), running_time(records)))
    series = {_TRAIN_LABEL: [(r.round, r.train[metric]) for r in records]}
    for group in dict.fromkeys(g for r in records for g in r.eval):
        series[_EVAL_LABELS.get(group, f"eval: {group}")] = [(r.round, r.eval[group][metric]) for r in records
                                                              if group in r.eval]
    for label, points in series.items():
        rounds, values = zip(*points)
        marker = "." if len(points) <= 60 else None  # dots help a short run, clutter a long one
        by_round.plot(rounds, values, marker=marker, label=label)
        by_time.plot([times[n] for n in rounds], values, marker=marker, label=label)
    by_round.set(xlabel="round", ylabel=ylabel, title="by round")
    by_round.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set(xlabel="running time (s, a resumed run continues its clock)", ylabel=ylabel,
                title="by running time")
    by_round.legend()
    return figure


def _percentile_lines(ax: Axes, percentiles: dict[int, float], vertical: bool) -> None:
    for q, value in percentiles.items():
        line = ax.axvline if vertical else ax.axhline
        line(value, color=_PERCENTILE_COLORS[q], linestyle="--", label=f"p{q} = {value:.3f} s")


def _latency_per_round(records: Sequence[RoundRecord]) -> Figure:
    figure, (ax,) = _figure()
    rounds, latencies = [r.round for r in records], [r.latency_s for r in records]
    label = "training round (evaluation not included)"
    if len(records) <= 300:
        ax.bar(rounds, latencies, color="tab:blue", alpha=0.7, label=label)
    else:  # bars thinner than a pixel would vanish
        ax.plot(rounds, latencies, color="tab:blue", linewidth=0.8, label=label)
    _percentile_lines(ax, latency_percentiles(records), vertical=False)
    ax.set(xlabel="round", ylabel="round latency (s)", ylim=(0, None),
           title="Round latency per round (the first round includes tracing the computations)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right")
    return figure


def _latency_cdf(records: Sequence[RoundRecord]) -> Figure:
    figure, (ax,) = _figure()
    latencies = np.sort([r.latency_s for r in records])
    ax.step(latencies, np.arange(1, len(latencies) + 1) / len(latencies), where="post", color="tab:blue",
            label=f"{len(latencies)} rounds")
    _percentile_lines(ax, latency_percentiles(records), vertical=True)
    ax.set(xlabel="round latency (s)", ylabel="fraction of rounds at most this slow", ylim=(0, 1.05),
           title="Distribution of round latency (CDF)")
    ax.legend(loc="lower right")
    return figure


def _gantt(record: RoundRecord, workers: list[str]) -> Figure:
    """Each worker's shards across the round; grey is idle time, the last bar is merge and server update."""
    figure, (ax,) = _figure()
    timeline = worker_timeline(record)
    labels = ["merge + server update"]
    colors = [f"C{i % 10}" for i in range(len(record.shards))]
    for y, worker in enumerate(reversed(workers), start=1):
        ax.broken_barh([(0, record.latency_s)], (y - 0.4, 0.8), color="0.9")
        busy = 0.0
        for start, duration, shard in timeline.get(worker, []):
            busy += duration
            ax.broken_barh([(start, duration)], (y - 0.35, 0.7), color=colors[shard.shard], edgecolor="black")
            if duration > 0.06 * record.latency_s:  # narrower bars stay unlabelled rather than overprinted
                clients = f"{len(shard.clients)} client" + ("s" if len(shard.clients) != 1 else "")
                ax.text(start + duration / 2, y, f"shard {shard.shard}\n{clients}", ha="center", va="center",
                        fontsize=8)
        labels.append(f"{worker}\nidle {record.latency_s - busy:.3f} s")
    last_shard_end = max((s.end - record.start for s in record.shards), default=0.0)
    ax.broken_barh([(last_shard_end, record.latency_s - last_shard_end)], (-0.35, 0.7), color="0.5")
    ax.axvline(record.latency_s, color="black", linestyle=":")
    ax.set_yticks(range(len(labels)), labels)
    failures = f"; {len(record.failures)} worker failure(s), their shards ran again" if record.failures else ""
    ax.set(xlabel="seconds since the round started", xlim=(0, record.latency_s * 1.02),
           title=f"Round {record.round}: shards per worker (round latency {record.latency_s:.3f} s{failures})")
    ax.legend(handles=[Patch(color="0.9", label="idle"), Patch(color="0.5", label="merge + server update"),
                       Line2D([], [], color="black", linestyle=":", label="round end")],
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure
