"""The numbers a person reads about a run: one line per round, and the summary rows that both
the terminal (at the end of a run) and `fedrun report` (summary.md) show."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedrun.config import BY_FLAG, RunConfig
from fedrun.learning.client_time import client_time_summary, combined
from fedrun.loop.records import RoundRecord

PERCENTILES = (50, 95, 99)
_CONFIG_ROWS = ("backend", "workers", "clients-per-round", "epochs", "model", "data")


def round_line(record: RoundRecord) -> str:
    if record.train:
        trained = f"loss {record.train['loss']:.4f}  acc {record.train['accuracy']:.4f}"
    else:
        trained = "abandoned (too few reports)"
    line = f"round {record.round:4d}  {trained}  latency {record.latency_s:6.2f}s"
    line += f"  {record.examples_per_s:8.0f} examples/s"
    if record.sim is not None:
        sim = record.sim
        line += f"  sim {sim['round_s']:7.1f}s ({sim['reported']}/{sim['selected']} reported)"
    if record.eval:
        line += "".join(f"  eval[{name}] acc {m['accuracy']:.4f}" for name, m in record.eval.items())
    return line


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


def summary_rows(records: Sequence[RoundRecord], config: RunConfig | None) -> list[tuple[str, str]]:
    """The key numbers of a run, as (what, value) rows."""
    last = next((r for r in reversed(records) if r.train), records[-1])
    pct = latency_percentiles(records)
    latencies = [r.latency_s for r in records]
    planned = f" of {config.workload.rounds} planned" if config else ""
    rows = [
        ("rounds in rounds.jsonl", f"{len(records)}{planned}"),
        ("running time to the end of the last round", f"{running_time(records)[-1]:.1f} s"),
        ("round latency p50 / p95 / p99", " / ".join(f"{pct[q]:.3f}" for q in PERCENTILES) + " s"),
        ("round latency min / max", f"{min(latencies):.3f} / {max(latencies):.3f} s"),
        ("first round latency (includes tracing)", f"{latencies[0]:.3f} s"),
        ("examples trained (all epochs)", f"{sum(r.examples_trained for r in records)}"),
        ("examples/s median", f"{np.median([r.examples_per_s for r in records]):.0f}"),
        ("clients/s median", f"{np.median([r.clients_per_s for r in records]):.1f}"),
        (
            "bytes to / from workers, all rounds",
            f"{sum(r.bytes_to_workers for r in records)} / {sum(r.bytes_from_workers for r in records)}",
        ),
        ("worker failures (their shards ran again)", f"{sum(len(r.failures) for r in records)}"),
    ]
    if last.train:
        rows.append(
            (
                f"train loss / accuracy (round {last.round})",
                f"{last.train['loss']:.4f} / {last.train['accuracy']:.4f}",
            )
        )
    rows += measured_client_rows(records)
    rows += straggler_rows(records)
    rows += simulated_rows(records)
    rows += buffered_rows(records)
    evaluated = [r for r in records if r.eval]
    if evaluated:
        for group, metrics in evaluated[-1].eval.items():
            rows.append(
                (
                    f"eval {group} loss / accuracy (round {evaluated[-1].round})",
                    f"{metrics['loss']:.4f} / {metrics['accuracy']:.4f}",
                )
            )
        for group in evaluated[-1].eval:
            best = max((r for r in evaluated if group in r.eval), key=lambda r: r.eval[group]["accuracy"])
            rows.append(
                (f"best eval {group} accuracy", f"{best.eval[group]['accuracy']:.4f} (round {best.round})")
            )
    if config:
        rows += [
            (f"config {flag.replace('-', '_')}", f"{config.value(BY_FLAG[flag])}") for flag in _CONFIG_ROWS
        ]
    return rows


def measured_client_rows(records: Sequence[RoundRecord]) -> list[tuple[str, str]]:
    """The clients' training times as the workers measured them, over all rounds, and the worker
    whose clients were slowest."""
    measured = [r.client_time for r in records if r.client_time and r.client_time["count"]]
    if not measured:
        return []
    run = client_time_summary(combined(measured))
    workers = {w for m in measured for w in m["by_worker"]}
    by_worker = {
        w: client_time_summary(combined([m["by_worker"][w] for m in measured if w in m["by_worker"]]))
        for w in workers
    }
    slowest = max(sorted(by_worker), key=lambda w: by_worker[w]["p95"])
    quantiles = " / ".join(f"{run[f'p{q}']:.3f}" for q in PERCENTILES)
    return [
        ("client training time p50 / p95 / p99 / max (measured)", f"{quantiles} / {run['max']:.3f} s"),
        (
            "worker with the slowest clients (measured p95)",
            f"{slowest}: {by_worker[slowest]['p95']:.3f} s over {by_worker[slowest]['count']} clients",
        ),
    ]


def straggler_rows(records: Sequence[RoundRecord]) -> list[tuple[str, str]]:
    """Workers slowed on purpose, and what speculation did about them."""
    rows = []
    slowed = records[-1].slowed
    if slowed:
        rows.append(
            (
                "workers slowed on purpose",
                ", ".join(f"{w} {s['factor']:g}x ({s['mechanism']})" for w, s in slowed.items()),
            )
        )
    speculated = [r.speculation for r in records if r.speculation is not None]
    if speculated:
        rows.append(
            (
                "speculative copies / wins / seconds wasted, all rounds",
                f"{sum(s['copies'] for s in speculated)} / {sum(s['wins'] for s in speculated)} / "
                f"{sum(s['wasted_s'] for s in speculated):.1f} s",
            )
        )
    return rows


def simulated_rows(records: Sequence[RoundRecord]) -> list[tuple[str, str]]:
    """With a system model: the run on the virtual clock."""
    simulated = [r.sim for r in records if r.sim is not None]
    if not simulated:
        return []
    round_s = [sim["round_s"] for sim in simulated]
    dropped = {
        reason: sum(sim["dropped"][reason] for sim in simulated) for reason in simulated[-1]["dropped"]
    }
    participation = simulated[-1]["participation"]
    rows = [
        ("simulated time at the end of the last round", f"{simulated[-1]['clock_s']:.1f} s"),
        (
            "simulated round time p50 / p95 / p99",
            " / ".join(f"{np.percentile(round_s, q):.1f}" for q in PERCENTILES) + " s",
        ),
        (
            "clients reported / selected, all rounds",
            f"{sum(sim['reported'] for sim in simulated)} / {sum(sim['selected'] for sim in simulated)}",
        ),
        ("clients dropped, by reason", ", ".join(f"{reason} {count}" for reason, count in dropped.items())),
        ("rounds abandoned", f"{sum(sim['abandoned'] for sim in simulated)}"),
    ]
    if participation:
        rows += [
            ("population that never contributed", f"{participation['never_fraction']:.1%}"),
            (
                "share of updates: fastest / slowest device quartile",
                f"{participation['fastest_quartile_share']:.1%} / "
                f"{participation['slowest_quartile_share']:.1%}",
            ),
        ]
    return rows


def buffered_rows(records: Sequence[RoundRecord]) -> list[tuple[str, str]]:
    """With buffered-async aggregation: versions, staleness and discarded results."""
    updates = [r.buffered for r in records if r.buffered is not None]
    if not updates:
        return []
    staleness = [int(s) for u in updates for s, n in u["staleness_counts"].items() for _ in range(n)]
    discarded = {reason: sum(u["discarded"][reason] for u in updates) for reason in updates[-1]["discarded"]}
    return [
        ("server version (buffered-async updates)", f"{updates[-1]['version']}"),
        (
            "staleness of counted results p50 / p95 / max",
            " / ".join(f"{np.percentile(staleness, q):.0f}" for q in (50, 95))
            + f" / {max(staleness)} versions",
        ),
        (
            "results discarded, by reason",
            ", ".join(f"{reason} {count}" for reason, count in discarded.items()),
        ),
    ]


def column_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns under a header and a rule: the first left-aligned, the rest right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths))
        )
        for line in lines
    )


def text_table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
