"""What a person reads in the terminal: one line per round and a table at the end."""

from collections.abc import Sequence

import numpy as np

from fedrun.results import RoundRecord


def round_line(record: RoundRecord) -> str:
    line = (f"round {record.round:4d}  loss {record.train['loss']:.4f}  acc {record.train['accuracy']:.4f}"
            f"  latency {record.latency_s:6.2f}s  {record.examples_per_s:8.0f} examples/s")
    if record.eval:
        line += "".join(f"  eval[{name}] acc {m['accuracy']:.4f}" for name, m in record.eval.items())
    return line


def summary_table(records: Sequence[RoundRecord], wall_s: float) -> str:
    latencies = np.array([r.latency_s for r in records])
    throughput = np.array([r.examples_per_s for r in records])
    last = records[-1]
    rows = [
        ("rounds", f"{len(records)}"),
        ("round latency p50 / p95 / max", " / ".join(f"{np.percentile(latencies, q):.2f}s" for q in (50, 95, 100))),
        ("first round", f"{latencies[0]:.2f}s"),
        ("examples/s median", f"{np.median(throughput):.0f}"),
        ("clients/s median", f"{np.median([r.clients_per_s for r in records]):.1f}"),
        ("final train loss / accuracy", f"{last.train['loss']:.4f} / {last.train['accuracy']:.4f}"),
    ]
    evaluated = [r for r in records if r.eval]
    if evaluated:
        for name, m in evaluated[-1].eval.items():
            rows.append((f"eval {name} loss / accuracy (round {evaluated[-1].round})",
                         f"{m['loss']:.4f} / {m['accuracy']:.4f}"))
    rows.append(("wall time", f"{wall_s:.1f}s"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
