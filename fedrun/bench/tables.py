"""The benchmark's tables as a person reads them in the terminal."""

from __future__ import annotations

from typing import Any

from fedrun.bench.config import LABELS, MEMORY_CHECKPOINT_ROUND, SYSTEMS
from fedrun.observe.summary import column_table


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def comparison_table(result: dict[str, Any]) -> str:
    systems, workload = result["systems"], result["workload"]
    header = ["", f"fedrun ({workload['workers']} workers)", *(LABELS[s] for s in SYSTEMS[1:])]
    rows_spec = [
        ("examples/s (median)", lambda s: f"{s['examples_per_s']:.0f}"),
        ("clients/s (median)", lambda s: f"{s['clients_per_s']:.1f}"),
        ("round latency median", lambda s: f"{s['round_latency_median_s']:.3f} s"),
        ("round latency p95", lambda s: f"{s['round_latency_p95_s']:.3f} s"),
        ("first round", lambda s: f"{s['first_round_s']:.2f} s"),
        ("start to end of round 1", lambda s: f"{s['start_to_first_round_s']:.2f} s"),
        ("  of which start", lambda s: f"{s['start_s']:.2f} s"),
        ("build (tracing, compiling)", lambda s: f"{s['build_s']:.2f} s"),
        ("CPU cores busy", lambda s: f"{s['cpu_cores_busy']:.2f}"),
        ("CPU time per example", lambda s: f"{s['cpu_us_per_example']:.1f} us"),
        ("peak tree memory RSS", lambda s: _mib(s["peak_tree_rss_bytes"])),
        ("peak tree memory PSS", lambda s: _mib(s["peak_tree_pss_bytes"])),
        ("held-out test accuracy", lambda s: f"{s['test']['accuracy']:.4f}"),
    ]
    rows = [[label, *(fmt(systems[s]) for s in SYSTEMS)] for label, fmt in rows_spec]
    a, r = result["agreement"], result["ratios"]
    notes = [
        f"workload: K={workload['clients_per_round']} clients/round, {workload['epochs']} epochs, batch "
        f"{workload['batch_size']}, {workload['rounds']} rounds, {workload['model']} model, "
        f"{workload['data']} data; rounds interleaved; medians over rounds 2-{workload['rounds']}",
        "TFF local context: FedAvg and its datasets as the tutorial builds them (in Python, a map per "
        "batch, sent as tensors; client loop dataset.reduce); TFF local, fedrun's data and loop: datasets "
        f"built on its worker from client keys, client_loop={workload['client_loop']}",
        *(
            f"fedrun / {LABELS[other]}: {r[f'fedrun_vs_{other}']['examples_per_s']:.2f}x examples/s "
            f"(per-round pairs: {r[f'fedrun_vs_{other}']['examples_per_s_paired_median']:.2f}x)"
            for other in SYSTEMS[1:]
        ),
        "fedrun's round (medians): "
        + ", ".join(
            f"{name.replace('_', ' ')} {ms:.0f} ms" for name, ms in systems["fedrun"]["time_split_ms"].items()
        ),
        "agreement with TFF local context: max |w - w_tff| "
        + ", ".join(
            f"{LABELS[s]} {a[f'{s}_vs_tff_local_max_weight_diff']:.1e}" for s in SYSTEMS if s != "tff_local"
        )
        + f"; test accuracy spread {a['test_accuracy_max_diff']:.1e}: {'OK' if a['passed'] else 'FAILED'}",
        f"machine: {result['machine']['cpus']} cores, load average "
        f"{result['machine']['load_average_1m_at_start']:.1f} at start (other processes' load makes wall "
        f"times unreliable; CPU time per example is not)",
    ]
    return column_table(header, rows) + "\n\n" + "\n".join(notes)


def scale_tables(scale_result: dict[str, Any]) -> str:
    by_k = scale_result["clients"]
    k_rows = [
        [
            str(r["clients"]),
            f"{r['round_latency_median_s']:.3f}",
            f"{r['ms_per_client']:.2f}",
            f"{r['examples_per_s']:.0f}",
            f"{r['cpu_cores_busy']:.2f}",
        ]
        for r in by_k["rows"]
    ]
    by_w = scale_result["workers"]
    w_rows = [
        [
            str(r["workers"]),
            f"{r['round_latency_median_s']:.3f}",
            f"{r['speedup_vs_1_worker']:.2f}",
            f"{r['examples_per_s']:.0f}",
            f"{r['cpu_cores_busy']:.2f}",
        ]
        for r in by_w["rows"]
    ]
    fit = by_k["linear_fit"]
    return "\n".join(
        [
            f"round latency vs clients per round (fedrun, {by_k['workers']} workers)",
            column_table(["K", "latency s", "ms/client", "examples/s", "cores busy"], k_rows),
            f"latency ~ K^{by_k['growth_exponent']:.2f} from K={by_k['rows'][0]['clients']} to "
            f"{by_k['rows'][-1]['clients']}; linear fit {fit['fixed_s']:.3f} s + "
            f"{1000 * fit['per_client_s']:.2f} ms/client",
            "",
            f"round latency vs workers (fedrun, K={by_w['clients_per_round']})",
            column_table(["workers", "latency s", "speed-up", "examples/s", "cores busy"], w_rows),
        ]
    )


def stragglers_table(result: dict[str, Any]) -> str:
    rows = [
        [
            r["variant"],
            f"{r['round_latency_median_s']:.3f}",
            f"{r['round_latency_p95_s']:.3f}",
            f"{r['median_vs_no_straggler']:.2f}x",
            f"{r['copies']}/{r['copy_wins']}" if r["copies"] else "",
            f"{r['max_weight_diff_vs_no_straggler']:.1e}",
        ]
        for r in result["rows"]
    ]
    return (
        f"round latency with worker {result['slow_worker']} slowed ({result['mechanism']}), "
        f"{result['rounds']} rounds each, interleaved\n"
        + column_table(["", "p50 s", "p95 s", "p50 vs none", "copies/wins", "max |w - w_none|"], rows)
    )


def buffered_table(result: dict[str, Any]) -> str:
    rows = [
        [
            r["variant"],
            f"{r['round_latency_median_s']:.3f}",
            f"{r['examples_per_s']:,.0f}",
            f"{r['throughput_vs_sync']:.2f}x",
        ]
        for r in result["rows"]
    ]
    return (
        f"wall throughput of buffered-async aggregation beside synchronous FedAvg, {result['rounds']} "
        f"updates each, interleaved (target: buffered-async >= {result['target']:.0%} of sync)\n"
        + column_table(["", "p50 s per update", "examples/s", "vs sync"], rows)
    )


def data_paths_table(result: dict[str, Any]) -> str:
    rows = [
        [r["data"], f"{r['examples_per_s']:,.0f}", f"{r['round_latency_median_s']:.3f}"]
        for r in result["rows"]
    ]
    return (
        "fedrun on the embedded data and on the file, the same workload, rounds interleaved: the file "
        f"gives {result['file_vs_embedded']:.2f}x the examples/s\n"
        + column_table(["data", "examples/s", "round p50 s"], rows)
    )


def client_costs_table(costs: dict[str, dict[str, Any]]) -> str:
    """One column per data: what a client costs on one worker, part by part."""
    parts = [
        ("a TFF call, per client", "call_ms"),
        ("+ its dataset built from the key", "dataset_ms"),
        ("+ the dataset iterated (all epochs)", "iterate_ms"),
        ("+ training, update, aggregates", "train_beyond_iterate_ms"),
        ("= the client in the round's up_to_merge", "total_ms"),
        ("one more epoch adds", "epoch_ms"),
        ("fixed cost (total - epochs x epoch)", "fixed_ms"),
        ("timing each client adds", "timing_ms"),
    ]
    names = list(costs)
    rows = [[label, *(f"{costs[n]['breakdown'][key]:.2f}" for n in names)] for label, key in parts]
    first = costs[names[0]]
    return (
        f"a client's cost on one worker, ms (K={first['clients']} clients in one call, "
        f"{first['epochs']} epochs; medians over rounds, interleaved)\n"
        + column_table(["", *(f"{n}: {costs[n]['data']}" for n in names)], rows)
        + "\ntimed / untimed up_to_merge, paired: "
        + ", ".join(f"{n} {costs[n]['timing_overhead']:.4f}" for n in names)
    )


def timing_table(timing: dict[str, Any]) -> str:
    latency = timing["round_latency_median_s"]
    return (
        f"timing each client, fedrun's rounds timed and untimed, {timing['rounds']} rounds each, "
        f"interleaved: round p50 {latency['timed']:.3f} s against {latency['untimed']:.3f} s; "
        f"timed / untimed, median of pairs: {timing['overhead']:.4f}"
    )


def memory_table(memory: dict[str, Any]) -> str:
    rows = [
        [f"after round {k}", _mib(v["peak_tree_rss_bytes"]), _mib(v["peak_tree_pss_bytes"])]
        for k, v in memory["peaks"].items()
    ]
    growth = "; ".join(f"{name}: {rate / 2**20:+.1f} MiB" for name, rate in memory["growth"].items())
    return (
        f"fedrun process-tree memory over {memory['rounds']} rounds\n"
        + column_table(["", "peak RSS", "peak PSS"], rows)
        + f"\nRSS growth per 100 rounds after round {MEMORY_CHECKPOINT_ROUND} (tree, and processes alive "
        f"throughout): {growth}"
    )


def repeats_table(repeats: list[dict[str, Any]]) -> str:
    others = [s for s in SYSTEMS if s != "fedrun"]
    rows = [
        [str(i + 1), *(f"{run['ratios'][f'fedrun_vs_{o}']['examples_per_s']:.2f}x" for o in others)]
        for i, run in enumerate(repeats)
    ]
    return (
        f"fedrun's examples/s over {len(repeats)} comparisons (the median one by the TF loop "
        f"ratio is reported and checked against the targets)\n"
        + column_table(["run", *(f"/ {LABELS[o]}" for o in others)], rows)
    )


def targets_table(checks: dict[str, dict[str, Any]]) -> str:
    verdicts = {True: "met", False: "MISSED", None: "not judged"}
    rows = [[name, f"{c['value']:.3g}", c["target"], verdicts[c["met"]]] for name, c in checks.items()]
    note = ""
    if any(c["met"] is None for c in checks.values()):
        note = (
            "\n(the targets were set for the default workload, --rounds 10 --clients-per-round 32 "
            "--epochs 5 on the synthetic data with the linear model; other workloads are measured, "
            "not judged)"
        )
    return "targets\n" + column_table(["", "measured", "target", ""], rows) + note
