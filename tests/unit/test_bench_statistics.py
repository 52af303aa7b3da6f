"""The bench's pure pieces: which of several comparisons is reported, and memory growth when
workers were recycled. No system runs here."""

from fedrun.bench.statistics import growth as _growth
from fedrun.bench.statistics import median_run


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
