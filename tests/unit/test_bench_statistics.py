"""The bench's pure pieces: which of several comparisons is reported, and memory growth when
workers were recycled, which targets are judged on what. No system runs here."""

from fedrun.bench.config import SYSTEMS
from fedrun.bench.statistics import growth as _growth
from fedrun.bench.statistics import median_run, targets


def _run(ratio: float) -> dict:
    return {"ratios": {"fedrun_vs_tf_loop": {"examples_per_s": ratio}}, "tag": ratio}


def test_median_run_is_one_real_run_with_the_median_ratio():
    assert median_run([_run(1.9), _run(1.5), _run(2.1)])["tag"] == 1.9
    assert median_run([_run(1.9), _run(1.5), _run(2.1), _run(1.7)])["tag"] == 1.7  # lower middle
    assert median_run([_run(1.4)])["tag"] == 1.4


def _sample(round_num: int, processes: dict[str, int]) -> dict:
    return {
        "round": round_num,
        "rss": sum(processes.values()),
        "processes": {name: {"rss": rss, "pss": rss} for name, rss in processes.items()},
    }


def test_growth_counts_recycled_workers_in_the_tree_only():
    mib = 2**20
    trace = [
        _sample(1, {"1 coordinator": 600 * mib, "2 worker_binary": 100 * mib}),
        _sample(10, {"1 coordinator": 600 * mib, "2 worker_binary": 150 * mib}),
        # the worker was recycled: pid 3 replaced pid 2
        _sample(210, {"1 coordinator": 610 * mib, "3 worker_binary": 170 * mib}),
    ]
    growth = _growth(trace)
    assert set(growth) == {"1 coordinator", "tree"}
    assert growth["1 coordinator"] == 100 * 10 * mib / 200
    assert growth["tree"] == 100 * 30 * mib / 200


def _comparison(untimed_paired: float) -> dict:
    system = {"start_to_first_round_s": 1.0, "peak_tree_rss_bytes": 2**20}
    ratios = {
        f"fedrun_vs_{other}": {"examples_per_s": 2.0, "examples_per_s_paired_median": 2.0}
        for other in SYSTEMS
        if other != "fedrun"
    }
    ratios["fedrun_vs_fedrun_untimed"]["examples_per_s_paired_median"] = untimed_paired
    return {"systems": {"fedrun": system, "tff_local": system}, "ratios": ratios}


def test_timing_overhead_is_judged_on_the_long_run_when_there_is_one():
    comparison = _comparison(untimed_paired=0.95)  # the comparison's few rounds: 5% slower
    assert targets(comparison)["client_timing_overhead"]["value"] == 1 / 0.95
    assert targets(comparison)["client_timing_overhead"]["met"] is False
    judged = targets({**comparison, "timing": {"overhead": 1.01}})["client_timing_overhead"]
    assert judged == {"value": 1.01, "target": "<= 1.02", "met": True}


def test_timing_on_a_worker_is_judged_for_each_data():
    costs = {"breakdown": {"fixed_ms": 2.0}, "timing_overhead": 1.03}
    checks = targets(
        {**_comparison(1.0), "client_costs": {"main": costs, "file": {**costs, "timing_overhead": 1.0}}}
    )
    assert checks["client_timing_overhead_on_a_worker"]["met"] is False
    assert checks["file_client_timing_overhead_on_a_worker"]["met"] is True
