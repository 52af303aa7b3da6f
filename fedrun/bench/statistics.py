"""The benchmark's arithmetic: per-system summaries, ratios, agreement of the final models,
targets, and which of several comparisons is reported. Pure: unit-tested without any system."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedrun.bench.config import (
    FEDRUN_VS_TFF_MAX_WEIGHT_DIFF,
    MAX_TEST_ACCURACY_DIFF,
    MEMORY_CHECKPOINT_ROUND,
    PEERS,
    SYSTEMS,
    TARGET_FILE_RATIO,
    TARGET_FILE_VS_EMBEDDED,
    TARGET_FIXED_MS_PER_CLIENT,
    TARGET_PEAK_MEMORY_BYTES,
    TARGET_PEER_RATIO,
    TARGET_RATIO,
    TARGET_TIMING_OVERHEAD,
    TF_LOOP_MAX_WEIGHT_DIFF,
)


def _median(values: Sequence[float]) -> float:
    return float(np.median(values))


def _p95(values: Sequence[float]) -> float:
    return float(np.percentile(values, 95))


def summarize(
    setup: dict[str, float],
    rounds: list[dict[str, Any]],
    peak_rss: int,
    peak_pss: int,
    final_memory: dict[str, Any],
) -> dict[str, Any]:
    """One system's numbers. Round 1 (compilation, caches) is reported apart; the medians and
    rates are over the later, steady rounds."""
    steady = rounds[1:]
    latencies = [r["latency_s"] for r in steady]
    return {
        **setup,
        "first_round_s": rounds[0]["latency_s"],
        "start_to_first_round_s": setup["start_s"] + rounds[0]["latency_s"],
        "round_latency_median_s": _median(latencies),
        "round_latency_p95_s": _p95(latencies),
        "examples_per_s": _median([r["num_examples"] / r["latency_s"] for r in steady]),
        "clients_per_s": _median([r["clients"] / r["latency_s"] for r in steady]),
        "cpu_cores_busy": sum(r["cpu_s"] for r in steady) / sum(r["wall_s"] for r in steady),
        # CPU time per example of the whole tree: how much work a system does for the same round,
        # whatever share of the machine it got (unlike wall time on a busy machine).
        "cpu_us_per_example": 1e6 * sum(r["cpu_s"] for r in steady) / sum(r["num_examples"] for r in steady),
        "peak_tree_rss_bytes": peak_rss,
        "peak_tree_pss_bytes": peak_pss,
        "final_tree_memory": final_memory,
        "rounds": rounds,
    }


def time_split(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Where fedrun's steady rounds go, medians in ms: the coordinator before the first shard is
    sent (arguments, sharding), the shards (workers training, gRPC included), the last worker's
    lead over the first to finish (the other one idles), the merge and `after_merge` call after
    the last shard, and the rest (sampling the cohort, recycling)."""
    steady = rounds[1:]

    def median_ms(values: Sequence[float]) -> float:
        return 1000 * _median(values)

    first_start = [min(s["start"] for s in r["shards"]) for r in steady]
    last_end = [max(s["end"] for s in r["shards"]) for r in steady]
    first_end = [min(s["end"] for s in r["shards"]) for r in steady]
    return {
        "before_first_shard": median_ms(first_start),
        "shards": median_ms([b - a for a, b in zip(first_start, last_end)]),
        "last_worker_lead": median_ms([b - a for a, b in zip(first_end, last_end)]),
        "merge_and_after_merge": median_ms(
            [r["coordinator_latency_s"] - e for r, e in zip(steady, last_end)]
        ),
        "outside_train_round": median_ms([r["latency_s"] - r["coordinator_latency_s"] for r in steady]),
    }


def paired_latency_ratio(numerator: list[dict[str, Any]], denominator: list[dict[str, Any]]) -> float:
    """The median of per-pair latency ratios, records paired in order (the same clients, run
    back to back in one pass of `interleaved`)."""
    return _median([a["latency_s"] / b["latency_s"] for a, b in zip(numerator, denominator)])


def ratios(systems: dict[str, dict[str, Any]], numerator: str, denominator: str) -> dict[str, float]:
    """`numerator` / `denominator`: of median examples/s, and the median of per-round ratios of
    examples/s (rounds of the same number train the same clients and ran back to back)."""
    a, b = systems[numerator], systems[denominator]
    paired = [
        ra["num_examples"] / ra["latency_s"] / (rb["num_examples"] / rb["latency_s"])
        for ra, rb in zip(a["rounds"][1:], b["rounds"][1:])
    ]
    return {
        "examples_per_s": a["examples_per_s"] / b["examples_per_s"],
        "examples_per_s_paired_median": _median(paired),
        "round_latency_median": a["round_latency_median_s"] / b["round_latency_median_s"],
    }


def agreement(weights: dict[str, list[np.ndarray]], test: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Every system's final model against TFF's local context's (as the tutorial builds it)."""
    others = [s for s in SYSTEMS if s != "tff_local"]
    diffs = {
        f"{s}_vs_tff_local_max_weight_diff": max(
            float(np.max(np.abs(x - y))) for x, y in zip(weights[s], weights["tff_local"])
        )
        for s in others
    }
    tolerances = {
        f"{s}_vs_tff_local_max_weight_diff": TF_LOOP_MAX_WEIGHT_DIFF
        if s == "tf_loop"
        else FEDRUN_VS_TFF_MAX_WEIGHT_DIFF
        for s in others
    }
    accuracy_diff = max(abs(test[s]["accuracy"] - test["tff_local"]["accuracy"]) for s in SYSTEMS)
    return {
        **diffs,
        "test_accuracy": {s: test[s]["accuracy"] for s in SYSTEMS},
        "test_accuracy_max_diff": accuracy_diff,
        "tolerances": {**tolerances, "test_accuracy_max_diff": MAX_TEST_ACCURACY_DIFF},
        "passed": (
            all(diffs[name] <= tolerances[name] for name in diffs) and accuracy_diff <= MAX_TEST_ACCURACY_DIFF
        ),
    }


def targets(result: dict[str, Any], judged: bool = True) -> dict[str, dict[str, Any]]:
    """Each target's measured value and whether it was met; `met` is None where the targets do not
    apply (`judged` False: they were set for the reference workloads only)."""
    systems = result["systems"]
    fedrun, tff_local = systems["fedrun"], systems["tff_local"]
    fedrun_vs = {other: result["ratios"][f"fedrun_vs_{other}"] for other in SYSTEMS if other != "fedrun"}
    checks = {
        f"examples_per_s_vs_{other}": (fedrun_vs[other]["examples_per_s"], ">=", TARGET_RATIO)
        for other in PEERS
    } | {
        "client_timing_overhead": (
            result["timing"]["overhead"]
            if "timing" in result
            else 1 / fedrun_vs["fedrun_untimed"]["examples_per_s_paired_median"],
            "<=",
            TARGET_TIMING_OVERHEAD,
        ),
        "start_to_first_round_s": (
            fedrun["start_to_first_round_s"],
            "<=",
            tff_local["start_to_first_round_s"],
        ),
        "peak_tree_rss_bytes": (fedrun["peak_tree_rss_bytes"], "<=", TARGET_PEAK_MEMORY_BYTES),
    }
    if "file" in result:
        on_file = result["file"]
        checks |= {
            "file_examples_per_s_vs_tff_local": (
                on_file["ratios"]["fedrun_vs_tff_local"]["examples_per_s"],
                ">=",
                TARGET_FILE_RATIO,
            ),
            "file_examples_per_s_vs_embedded": (
                result["data_paths"]["file_vs_embedded"],
                ">=",
                TARGET_FILE_VS_EMBEDDED,
            ),
            "file_peak_tree_rss_bytes": (
                on_file["systems"]["fedrun"]["peak_tree_rss_bytes"],
                "<=",
                TARGET_PEAK_MEMORY_BYTES,
            ),
        }
    for name, costs in result.get("client_costs", {}).items():
        prefix = "" if name == "main" else f"{name}_"
        checks[f"{prefix}fixed_ms_per_client"] = (
            costs["breakdown"]["fixed_ms"],
            "<=",
            TARGET_FIXED_MS_PER_CLIENT,
        )
        checks[f"{prefix}client_timing_overhead_on_a_worker"] = (
            costs["timing_overhead"],
            "<=",
            TARGET_TIMING_OVERHEAD,
        )
    for row in result.get("peers", {}).get("pfl", {}).get("rows", [])[1:]:  # rows[0] is fedrun
        checks[f"examples_per_s_vs_pfl_{row['processes']}_processes"] = (
            row["fedrun_vs_this"],
            ">=",
            TARGET_PEER_RATIO,
        )
    if "scale" in result:
        checks["latency_growth_exponent_in_clients"] = (
            result["scale"]["clients"]["growth_exponent"],
            "<=",
            1.0,
        )
    return {
        name: {
            "value": value,
            "target": f"{relation} {bound:.3g}",
            "met": (value >= bound if relation == ">=" else value <= bound) if judged else None,
        }
        for name, (value, relation, bound) in checks.items()
    }


def scale_row(key: dict[str, int], records: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [r["latency_s"] for r in records]
    return {
        **key,
        "round_latency_median_s": _median(latencies),
        "examples_per_s": _median([r["num_examples"] / r["latency_s"] for r in records]),
        "ms_per_client": 1000 * _median([r["latency_s"] / r["clients"] for r in records]),
        "cpu_cores_busy": sum(r["cpu_s"] for r in records) / sum(r["wall_s"] for r in records),
        "latencies_s": latencies,
    }


def growth(trace: list[dict[str, Any]]) -> dict[str, float]:
    """RSS growth per 100 rounds of the tree and of each process alive throughout, from round 10
    (or the first sample) to the last. Recycled workers are new processes: they count in the tree."""
    later = [t for t in trace if t["round"] >= MEMORY_CHECKPOINT_ROUND] or trace
    first, last = later[0], later[-1]
    span = max(1, last["round"] - first["round"])

    throughout = first["processes"].keys() & last["processes"].keys()
    return {
        name: 100 * (last["processes"][name]["rss"] - first["processes"][name]["rss"]) / span
        for name in sorted(throughout)
    } | {"tree": 100 * (last["rss"] - first["rss"]) / span}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparison whose fedrun / TF loop examples/s ratio is the median (the lower of the two
    middle ones for an even count): every number reported then comes from one real run."""
    ranked = sorted(runs, key=lambda run: run["ratios"]["fedrun_vs_tf_loop"]["examples_per_s"])
    return ranked[(len(ranked) - 1) // 2]
