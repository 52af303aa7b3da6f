"""`fedrun bench`: one workload on fedrun, on TFF's own single-process local context and on a
plain single-process TensorFlow loop, side by side in one invocation.

TFF's local context runs twice: as the tutorial builds FedAvg (TFF's default client loop,
`dataset.reduce`), and with fedrun's client loop, so a reader can tell how much of fedrun's lead
comes from the loop and how much from the runtime; fedrun runs twice too, with and without
timing each client on its worker, which tells what the timing costs. Each system runs in a
process of its own (so CPU time and memory are those of its own process tree, workers included)
and the parent
interleaves them round by round, rotating the order, so a machine whose speed drifts slows all
alike. All train the same clients with the same shuffle seeds from the same dataset computation;
the run checks that they end with the same model.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psutil

from fedrun.bench.config import (
    MEMORY_CHECKPOINT_ROUND,
    SYSTEMS,
    TARGET_BUFFERED_THROUGHPUT,
    WORKLOAD_FLAGS,
    BenchConfig,
)
from fedrun.bench.file_workload import bench_file
from fedrun.bench.process_tree import PeakMemorySampler
from fedrun.bench.statistics import (
    agreement,
    growth,
    median_run,
    paired_latency_ratio,
    ratios,
    scale_row,
    summarize,
    targets,
    time_split,
)
from fedrun.bench.systems import build_and_start, system_processes
from fedrun.bench.tables import (
    buffered_table,
    client_costs_table,
    comparison_table,
    data_paths_table,
    memory_table,
    repeats_table,
    scale_tables,
    stragglers_table,
    targets_table,
    timing_table,
)
from fedrun.config import BY_FLAG, RunConfig
from fedrun.stopping import STOP

TIMINGS = ("timed", "untimed")  # timing_overhead's two fedrun variants


def compare(config: RunConfig) -> dict[str, Any]:
    """The systems on the workload, rounds interleaved; checks they agree."""
    workload = config.workload
    specs = {
        "fedrun": ("fedrun", config),
        "fedrun_untimed": ("fedrun", config.replace(observe={"client_timing": False})),
        "tff_local": ("tff_tutorial", config.replace(workload={"client_loop": "reduce"})),
        "tff_local_same_loop": ("tff_local", config),
        "tf_loop": ("tf_loop", config),
    }
    with PeakMemorySampler() as sampler, system_processes(specs, sampler) as children:
        setup = build_and_start(children)
        rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
        for round_num in range(1, workload.rounds + 1):
            STOP.check()
            for name in _rotated(SYSTEMS, round_num):
                rounds[name].append(children[name].round(round_num, workload.clients_per_round))
        final = {s: sampler.sample(s) for s in SYSTEMS}
        weights = {s: children[s].call("weights") for s in SYSTEMS}
        test = children["tf_loop"].call("evaluate", weights)
        systems = {
            s: summarize(setup[s], rounds[s], *sampler.peaks(s), dataclasses.asdict(final[s]))
            for s in SYSTEMS
        }
    systems["fedrun"]["time_split_ms"] = time_split(rounds["fedrun"])
    for s in SYSTEMS:
        systems[s]["test"] = test[s]
    return {
        "systems": systems,
        "ratios": {
            f"fedrun_vs_{other}": ratios(systems, "fedrun", other) for other in SYSTEMS if other != "fedrun"
        },
        "agreement": agreement(weights, test),
    }


def scale(bench: BenchConfig) -> dict[str, Any]:
    """fedrun's round latency against clients per round (on all workers) and against the number
    of workers (at the workload's clients per round). Points are interleaved round by round."""
    config = bench.workload
    workload, workers = config.workload, config.workers.count
    counts = list(range(1, workers + 1))
    specs = {f"fedrun-{n}": ("fedrun", config.replace(workers={"count": n})) for n in counts}
    with PeakMemorySampler() as sampler, system_processes(specs, sampler) as children:
        build_and_start(children)
        run = _next_rounds(children)
        widest = f"fedrun-{workers}"
        by_clients = interleaved([(widest, k) for k in bench.scale_clients], bench.scale_rounds, run)
        by_workers = interleaved(
            [(f"fedrun-{n}", workload.clients_per_round) for n in counts], bench.scale_rounds, run
        )
    clients_rows = [scale_row({"clients": k}, by_clients[(widest, k)]) for k in bench.scale_clients]
    workers_rows = [
        scale_row({"workers": n}, by_workers[(f"fedrun-{n}", workload.clients_per_round)]) for n in counts
    ]
    for row in workers_rows:
        row["speedup_vs_1_worker"] = workers_rows[0]["round_latency_median_s"] / row["round_latency_median_s"]
    ks = np.array(bench.scale_clients, float)
    latencies = np.array([row["round_latency_median_s"] for row in clients_rows])
    slope, intercept = np.polyfit(ks, latencies, 1)
    return {
        "clients": {
            "workers": workers,
            "rows": clients_rows,
            # latency ~ K^exponent between the smallest and the largest K: <= 1 is at most linear.
            "growth_exponent": (
                math.log(latencies[-1] / latencies[0]) / math.log(ks[-1] / ks[0]) if len(ks) > 1 else 0.0
            ),
            "linear_fit": {"fixed_s": float(intercept), "per_client_s": float(slope)},
        },
        "workers": {"clients_per_round": workload.clients_per_round, "rows": workers_rows},
    }


def stragglers(bench: BenchConfig) -> dict[str, Any]:
    """Round latency with the last worker slowed `slow_factor` times (for real: cluster.local.
    throttle) under each mitigation, beside the same pool with no straggler; rounds interleaved.
    Every variant trains the same clients, so all must end with the same model."""
    config = bench.workload
    slow = f"local-{config.workers.count - 1}:{bench.slow_factor:g}"
    slowed = config.replace(workers={"slow": slow})
    specs = {
        name: ("fedrun", variant)
        for name, variant in {
            "no straggler": config,
            "slowed, no mitigation": slowed,
            "slowed, 4 shards per worker": slowed.replace(dispatch={"shards": 4 * config.workers.count}),
            "slowed, speculative copies": slowed.replace(dispatch={"speculate": True}),
            "slowed, speed-sized shards": slowed.replace(dispatch={"shard_sizing": "speed"}),
        }.items()
    }
    clients = config.workload.clients_per_round
    with PeakMemorySampler() as sampler, system_processes(specs, sampler) as children:
        build_and_start(children)
        run = _next_rounds(children)
        points = [(name, clients) for name in specs]
        by_variant = interleaved(points, config.workload.rounds, run)
        weights = {name: children[name].call("weights") for name in specs}
    baseline = "no straggler"
    rows = []
    for name in specs:
        records = by_variant[(name, clients)]
        latencies = [r["latency_s"] for r in records]
        rows.append(
            {
                "variant": name,
                "round_latency_median_s": float(np.median(latencies)),
                "round_latency_p95_s": float(np.percentile(latencies, 95)),
                "copies": sum(r["copies"] for r in records),
                "copy_wins": sum(r["copy_wins"] for r in records),
                "max_weight_diff_vs_no_straggler": max(
                    float(np.max(np.abs(a - b))) for a, b in zip(weights[name], weights[baseline])
                ),
                "latencies_s": latencies,
            }
        )
    for row in rows:
        row["median_vs_no_straggler"] = row["round_latency_median_s"] / rows[0]["round_latency_median_s"]
    mechanisms = sorted({m for r in by_variant[(rows[1]["variant"], clients)] for m in r["slowed"].values()})
    return {
        "slow_worker": slow,
        "mechanism": ", ".join(mechanisms),
        "rounds": config.workload.rounds,
        "rows": rows,
    }


def buffered(bench: BenchConfig) -> dict[str, Any]:
    """Wall throughput of buffered-async aggregation (B results per server update, C clients in
    flight on the lognormal virtual clock) beside synchronous FedAvg with K = B clients per round
    on the same kind of pool: the same number of clients per server step; updates interleaved."""
    config = bench.workload
    aggregation = config.aggregation
    size = aggregation.buffer_size
    specs = {
        f"sync FedAvg, K = {size}": ("fedrun", config.replace(workload={"clients_per_round": size})),
        f"buffered-async, B = {size}, C = {aggregation.max_concurrency}": (
            "fedrun_buffered",
            config.replace(system={"model": "lognormal"}, aggregation={"mode": "buffered-async"}),
        ),
    }
    with PeakMemorySampler() as sampler, system_processes(specs, sampler) as children:
        build_and_start(children)
        by_variant = interleaved(
            [(name, size) for name in specs], config.workload.rounds, _next_rounds(children)
        )
    rows = []
    for name in specs:
        records = by_variant[(name, size)]
        latencies = [r["latency_s"] for r in records]
        rows.append(
            {
                "variant": name,
                "round_latency_median_s": float(np.median(latencies)),
                "examples_per_s": sum(r["num_examples"] for r in records) / sum(latencies),
                "latencies_s": latencies,
            }
        )
    for row in rows:
        row["throughput_vs_sync"] = row["examples_per_s"] / rows[0]["examples_per_s"]
    return {"rounds": config.workload.rounds, "target": TARGET_BUFFERED_THROUGHPUT, "rows": rows}


def data_paths(embedded: RunConfig, on_file: RunConfig) -> dict[str, Any]:
    """fedrun on the embedded data and on a file, the same workload, rounds interleaved: what the
    file-backed path costs against data generated on the workers."""
    specs = {"embedded data": ("fedrun", embedded), "file": ("fedrun", on_file)}
    clients = embedded.workload.clients_per_round
    with PeakMemorySampler() as sampler, system_processes(specs, sampler) as children:
        build_and_start(children)
        by_data = interleaved(
            [(name, clients) for name in specs], embedded.workload.rounds - 1, _next_rounds(children)
        )
    rows = [
        {
            "data": name,
            "examples_per_s": float(np.median([r["num_examples"] / r["latency_s"] for r in records])),
            "round_latency_median_s": float(np.median([r["latency_s"] for r in records])),
        }
        for name, records in ((name, by_data[(name, clients)]) for name in specs)
    ]
    return {"rows": rows, "file_vs_embedded": rows[1]["examples_per_s"] / rows[0]["examples_per_s"]}


def timing_overhead(config: RunConfig, rounds: int) -> dict[str, Any]:
    """fedrun with its clients timed and untimed, `rounds` rounds interleaved after one untimed
    each: what timing every client costs a round, with more pairs than the comparison's few."""
    specs = {name: ("fedrun", config.replace(observe={"client_timing": name == "timed"})) for name in TIMINGS}
    clients = config.workload.clients_per_round
    with PeakMemorySampler() as sampler, system_processes(specs, sampler) as children:
        build_and_start(children)
        by_timing = interleaved([(name, clients) for name in specs], rounds, _next_rounds(children))
    timed, untimed = (by_timing[(name, clients)] for name in TIMINGS)
    return {
        "rounds": rounds,
        "round_latency_median_s": {
            name: float(np.median([r["latency_s"] for r in by_timing[(name, clients)]])) for name in TIMINGS
        },
        "overhead": paired_latency_ratio(timed, untimed),
    }


def client_costs(config: RunConfig) -> dict[str, Any]:
    """fedrun.bench.client_costs' probes on one worker, each over the round's clients in one
    call, rounds interleaved: a client's cost split into its parts."""
    from fedrun.bench.client_costs import PROBES, breakdown

    clients = config.workload.clients_per_round
    with (
        PeakMemorySampler() as sampler,
        system_processes({"costs": ("client_costs", config)}, sampler) as children,
    ):
        build_and_start(children)
        child = children["costs"]
        next_round = dict.fromkeys(PROBES, 1)

        def run(name: str, k: int) -> dict[str, Any]:
            STOP.check()
            record = child.call("probe", name, next_round[name], k)
            next_round[name] += 1
            return record

        by_probe = interleaved([(name, clients) for name in PROBES], config.workload.rounds - 1, run)
    per_client_ms = {
        name: 1000 * float(np.median([r["latency_s"] for r in by_probe[(name, clients)]])) / clients
        for name in PROBES
    }
    timed, untimed = (by_probe[(name, clients)] for name in ("train", "train_untimed"))
    return {
        "data": config.data.source,
        "clients": clients,
        "epochs": config.workload.epochs,
        "per_client_ms": per_client_ms,
        "breakdown": breakdown(per_client_ms, config.workload.epochs),
        "timing_overhead": paired_latency_ratio(timed, untimed),
    }


def _next_rounds(children: dict[str, Any]) -> Callable[[str, int], dict[str, Any]]:
    """`run(name, clients)`: the next round of that system with that many clients, its record."""
    next_round = dict.fromkeys(children, 1)

    def run(name: str, clients: int) -> dict[str, Any]:
        STOP.check()
        record = children[name].round(next_round[name], clients)
        next_round[name] += 1
        return record

    return run


def _rotated(names: Sequence[str], by: int) -> list[str]:
    by %= len(names)
    return [*names[by:], *names[:by]]


def interleaved(
    points: list[tuple[str, int]], timed_rounds: int, run: Callable[[str, int], dict[str, Any]]
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """One untimed round per point, then `timed_rounds` passes over all points in rotating order."""
    for name, clients in points:
        run(name, clients)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {p: [] for p in points}
    for rep in range(timed_rounds):
        for point in _rotated(points, rep):
            results[point].append(run(*point))
    return results


def rounds_memory(
    bench: BenchConfig, on_progress: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """fedrun's process-tree memory over a long run: the peak after round 10 and after the last
    round, and every process's PSS along the way (a leaking process grows)."""
    config = bench.workload
    workload = config.workload
    total = bench.rounds_memory
    every = max(1, total // 20)
    with (
        PeakMemorySampler() as sampler,
        system_processes({"fedrun": ("fedrun", config)}, sampler) as children,
    ):
        child = children["fedrun"]
        build_and_start(children)
        trace, peaks = [], {}
        for round_num in range(1, total + 1):
            STOP.check()
            record = child.round(round_num, workload.clients_per_round)
            if round_num in (1, MEMORY_CHECKPOINT_ROUND, total) or round_num % every == 0:
                memory = sampler.sample("fedrun")
                trace.append(
                    {"round": round_num, "latency_s": record["latency_s"], **dataclasses.asdict(memory)}
                )
                on_progress(
                    f"round {round_num:5d}  tree RSS {memory.rss / 2**20:7.0f} MiB  "
                    f"PSS {memory.pss / 2**20:7.0f} MiB  latency {record['latency_s']:.2f}s"
                )
            if round_num in (MEMORY_CHECKPOINT_ROUND, total):
                rss, pss = sampler.peaks("fedrun")
                peaks[round_num] = {"peak_tree_rss_bytes": rss, "peak_tree_pss_bytes": pss}
    return {
        "rounds": total,
        "peaks": {str(k): v for k, v in peaks.items()},
        "growth": growth(trace),
        "trace": trace,
    }


def run_bench(bench: BenchConfig, print_line: Callable[[str], None] = print) -> dict[str, Any]:
    result: dict[str, Any] = {"workload": _workload_fields(bench.workload), "machine": _machine()}
    result.update(_comparisons(bench, bench.workload, print_line))
    on_file = None
    if bench.file_data:
        path = bench_file(bench.workload.data.cache_dir, bench.file_clients)
        on_file = bench.workload.replace(data={"source": str(path)})
        print_line(f"\nthe same workload on a file: {path} ({bench.file_clients} writers)")
        result["file"] = {"path": str(path), **_comparisons(bench, on_file, print_line)}
        result["data_paths"] = data_paths(bench.workload, on_file)
        print_line(data_paths_table(result["data_paths"]))
    if "pfl" in bench.peers:
        from fedrun.bench.peers.pfl import peers_table, pfl_side_by_side

        result["peers"] = {"pfl": pfl_side_by_side(on_file or bench.workload)}
        print_line(peers_table(result["peers"]["pfl"]))
    result["client_costs"] = {
        name: client_costs(config) for name, config in (("main", bench.workload), ("file", on_file)) if config
    }
    print_line(client_costs_table(result["client_costs"]))
    if bench.timing_rounds:
        result["timing"] = timing_overhead(bench.workload, bench.timing_rounds)
        print_line(timing_table(result["timing"]))
    if bench.scale:
        result["scale"] = scale(bench)
        print_line(scale_tables(result["scale"]))
    if bench.stragglers:
        result["stragglers"] = stragglers(bench)
        print_line(stragglers_table(result["stragglers"]))
    if bench.buffered:
        result["buffered"] = buffered(bench)
        print_line(buffered_table(result["buffered"]))
    if bench.rounds_memory:
        result["rounds_memory"] = rounds_memory(bench, print_line)
        print_line(memory_table(result["rounds_memory"]))
    result["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]
    result["targets"] = targets(result, bench.reference_workload)
    print_line(targets_table(result["targets"]))
    return result


def _comparisons(bench: BenchConfig, config: RunConfig, print_line: Callable[[str], None]) -> dict[str, Any]:
    """`bench.repeat` comparisons of the systems on `config`; the median one, with the others'
    ratios beside it."""
    runs = []
    for index in range(bench.repeat):
        runs.append(compare(config))
        if bench.repeat > 1:
            print_line(f"comparison {index + 1} of {bench.repeat}")
        print_line(
            comparison_table({"workload": _workload_fields(config), "machine": _machine(), **runs[-1]})
        )
    chosen = median_run(runs)
    if bench.repeat > 1:
        chosen["repeats"] = [{"ratios": run["ratios"], "agreement": run["agreement"]} for run in runs]
        chosen["agreement"] = {
            **chosen["agreement"],
            "passed": all(run["agreement"]["passed"] for run in runs),
        }
        print_line(repeats_table(chosen["repeats"]))
    return chosen


def _workload_fields(config: RunConfig) -> dict[str, Any]:
    return {BY_FLAG[flag].key: config.value(BY_FLAG[flag]) for flag in WORKLOAD_FLAGS}


def _machine() -> dict[str, Any]:
    # Other processes' load distorts wall times (and favours whichever system has more threads).
    return {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "load_average_1m_at_start": os.getloadavg()[0],
    }
