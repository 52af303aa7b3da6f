"""`fedrun report DIR`: plots and a markdown summary of a run, finished or still going.

Reads only DIR/rounds.jsonl (and DIR/config.toml when present), so it can run while the
coordinator appends rounds: a last line still being written is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg

from fedrun.config import RunConfig, read_config_file, resolve
from fedrun.errors import FedrunError
from fedrun.loop.records import RoundRecord
from fedrun.loop.run_dir import CONFIG, LABEL_MIX, REPORT, RunDirectory
from fedrun.observe.summary import summary_rows
from fedrun.report.figures import (
    accuracy_by_simulated_time,
    accuracy_of_runs,
    client_times,
    dropped_clients,
    gantt,
    label_mix,
    latency_cdf,
    latency_per_round,
    learning_curves,
    participation_histogram,
    simulated_round_times,
    staleness,
)

_LOG = logging.getLogger(__name__)


def write_report(
    run_dir: Path, round_num: int | None = None, out: Path | None = None, compare: Sequence[Path] = ()
) -> Path:
    """Writes the PNGs and summary.md into `out` (default DIR/report) and returns summary.md's
    path; `compare`: other runs whose accuracy is plotted beside this one's."""
    run_dir_files = RunDirectory(run_dir)
    rounds = run_dir_files.rounds
    records = rounds.read(
        on_torn=lambda number: _LOG.warning(
            "skipped the incomplete last line of %s (a round still being written)", rounds.path
        )
    )
    if not records:
        raise FedrunError(f"no round has finished yet in {rounds.path}: try again after the first round")
    by_number = {r.round: r for r in records}
    chosen = by_number.get(records[-1].round if round_num is None else round_num)
    if chosen is None:
        raise FedrunError(
            f"round {round_num} is not in {rounds.path}: choose --round between "
            f"{records[0].round} and {records[-1].round}"
        )
    out = out or run_dir / REPORT
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FedrunError(
            f"cannot create the report directory {out} ({e.strerror}): choose another --out"
        ) from None

    # A worker whose only attempt lost a speculative race still has a row of the chart.
    workers = sorted(
        {s.worker for r in records for s in r.shards} | {c["worker"] for r in records for c in r.lost_copies}
    )
    plots = {
        "accuracy.png": learning_curves(records, "accuracy", "accuracy (fraction correct)"),
        "loss.png": learning_curves(records, "loss", "loss (cross-entropy)"),
        "latency.png": latency_per_round(records),
        "latency_cdf.png": latency_cdf(records),
        f"shards_round_{chosen.round}.png": gantt(chosen, workers),
    }
    if any(r.client_time for r in records):
        plots["client_time.png"] = client_times(records)
    if any(r.sim is not None for r in records):
        plots.update(
            {
                "accuracy_simulated_time.png": accuracy_by_simulated_time(records),
                "simulated_round_time.png": simulated_round_times(records),
                "dropped_clients.png": dropped_clients(records),
            }
        )
        clients = run_dir_files.clients
        participation = next((r.sim["participation"] for r in reversed(records) if r.sim), {})
        if clients.path.exists() and participation:
            counts: Counter[int] = Counter()
            for line in clients.read_raw(on_torn=lambda number: None):
                counts[line["index"]] += line["outcome"] == "counted"
            plots["participation.png"] = participation_histogram(
                list(counts.values()), participation["population"]
            )
    if any(r.buffered is not None for r in records):
        plots["staleness.png"] = staleness(records)
    if compare:
        paths = [run_dir, *compare]
        names = [p.name for p in paths]
        labels = [p.name if names.count(p.name) == 1 else str(p) for p in paths]  # folders may share a name
        runs = dict(zip(labels, [records, *(_other_run(other) for other in compare)]))
        group = _common_group(runs)
        plots["accuracy_runs.png"] = accuracy_of_runs(runs, group)
    mix_file = run_dir / LABEL_MIX
    if mix_file.exists():
        plots["label_mix.png"] = label_mix(json.loads(mix_file.read_text()))
    for name, figure in plots.items():
        FigureCanvasAgg(figure).print_png(out / name)

    rows = summary_rows(records, _config(run_dir))
    lines = [
        f"# fedrun report: {run_dir}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{name.removesuffix('.png')}]({name})" for name in plots]
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n")
    return summary


def _other_run(run_dir: Path) -> list[RoundRecord]:
    records = RunDirectory(run_dir).rounds.read(on_torn=lambda number: None)
    if not records:
        raise FedrunError(f"--compare {run_dir}: no round has finished there (no rounds.jsonl lines)")
    return records


def _common_group(runs: dict[str, list[RoundRecord]]) -> str:
    """The evaluation group every run has: held-out clients if they all have them."""
    shared = set.intersection(*({g for r in records for g in r.eval} for records in runs.values()))
    for group in ("heldout", "sample", "round_clients", *sorted(shared)):
        if group in shared:
            return group
    raise FedrunError(
        f"--compare: the runs share no evaluation group ({', '.join(runs)}): "
        "evaluate them on the same --eval-on"
    )


def _config(run_dir: Path) -> RunConfig | None:
    path = run_dir / CONFIG
    return resolve(read_config_file(path)) if path.exists() else None
