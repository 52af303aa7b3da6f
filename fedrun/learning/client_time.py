"""Clients' local-training times as their workers measure them: a fixed log-spaced histogram.

Each client's duration falls in one of BUCKETS buckets 4% wide from 1 ms to about 30 minutes
(plus one below and one above), so percentiles taken from the summed histogram are exact to 4%
whatever the number of clients, and histograms of shards, workers and rounds add up. The
workers return one vector per aggregate (`pack`): the bucket counts, then the sum, the count
and the maximum of the durations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

FIRST_EDGE_S = 1e-3
GROWTH = 1.04  # each bucket's upper edge over its lower: percentiles within 4%
BUCKETS = 368  # FIRST_EDGE_S * GROWTH**BUCKETS is about 1,850 s: past 30 minutes
SLOTS = BUCKETS + 2  # [0, first edge), the BUCKETS buckets, [last edge, inf)
LENGTH = SLOTS + 3  # a packed vector: the slots' counts, then sum, count, max
QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def bucket_edges() -> np.ndarray:
    """The BUCKETS + 1 edges in seconds; slot i (1..BUCKETS) is [edges[i-1], edges[i])."""
    return FIRST_EDGE_S * GROWTH ** np.arange(BUCKETS + 1, dtype=np.float64)


def slot_of(seconds: np.ndarray | float) -> np.ndarray:
    """The slot of each duration; the same rule as the workers' (client_work)."""
    return np.searchsorted(bucket_edges(), np.asarray(seconds, dtype=np.float64), side="right")


def measure(seconds: Sequence[float]) -> dict[str, Any]:
    """The measurement of some durations, as the workers would return it (for tests and tools)."""
    values = np.asarray(seconds, dtype=np.float64)
    return {
        "histogram": np.bincount(slot_of(values), minlength=SLOTS).astype(np.int64),
        "count": len(values),
        "sum_s": float(values.sum()),
        "max_s": float(values.max(initial=0.0)),
    }


def unpack(vector: Any) -> dict[str, Any]:
    """A worker's packed vector as a measurement: dense histogram, count, sum_s, max_s."""
    values = np.asarray(vector, dtype=np.float64)
    return {
        "histogram": np.rint(values[:SLOTS]).astype(np.int64),
        "sum_s": float(values[SLOTS]),
        "count": int(round(values[SLOTS + 1])),
        "max_s": float(values[SLOTS + 2]),
    }


def partial_client_time(partial: Any) -> dict[str, Any] | None:
    """The measurement inside one shard's partial aggregate (up_to_merge's result), found as the
    one float64 vector of the packed length; None if the round was not timed."""
    for leaf in _leaves(partial):
        if isinstance(leaf, np.ndarray) and leaf.dtype == np.float64 and leaf.shape == (LENGTH,):
            return unpack(leaf)
    return None


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif hasattr(value, "__attrs_attrs__"):
        for attribute in value.__attrs_attrs__:
            yield from _leaves(getattr(value, attribute.name))
    else:
        yield value


def merged(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Measurements of disjoint sets of clients, as one."""
    parts = list(parts)
    return {
        "histogram": np.sum([p["histogram"] for p in parts], axis=0, dtype=np.int64)
        if parts
        else np.zeros(SLOTS, np.int64),
        "count": sum(p["count"] for p in parts),
        "sum_s": sum(p["sum_s"] for p in parts),
        "max_s": max((p["max_s"] for p in parts), default=0.0),
    }


def dense(pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """A summary's nonzero [slot, count] pairs as a dense histogram."""
    histogram = np.zeros(SLOTS, np.int64)
    for slot, count in pairs:
        histogram[slot] += count
    return histogram


def combined(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Summaries written by `client_time_summary(..., with_histogram=True)`, as one measurement."""
    return merged(
        {
            "histogram": dense(s["histogram"]),
            "count": s["count"],
            "sum_s": s["mean"] * s["count"],
            "max_s": s["max"],
        }
        for s in summaries
    )


def quantile(histogram: np.ndarray, q: float, max_s: float) -> float:
    """The q-quantile of the histogram's durations: geometric interpolation inside its bucket,
    never above the slowest one measured."""
    counts = np.asarray(histogram, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    rank = q * total
    cumulative = np.cumsum(counts)
    slot = int(np.searchsorted(cumulative, rank, side="left"))
    edges = bucket_edges()
    if slot == 0:
        return min(edges[0], max_s)
    if slot == SLOTS - 1:
        return max_s
    low, high = edges[slot - 1], edges[slot]
    before = cumulative[slot] - counts[slot]
    inside = (rank - before) / counts[slot]
    return float(min(low * (high / low) ** inside, max_s))


def client_time_summary(measured: dict[str, Any], with_histogram: bool = False) -> dict[str, Any]:
    """What a round record keeps of a measurement: p50, p95, p99, max, mean, count (and the
    histogram's nonzero [slot, count] pairs)."""
    histogram, count = measured["histogram"], measured["count"]
    summary: dict[str, Any] = {
        name: quantile(histogram, q, measured["max_s"]) for name, q in QUANTILES.items()
    }
    summary |= {"max": measured["max_s"], "mean": measured["sum_s"] / count if count else 0.0, "count": count}
    if with_histogram:
        summary["histogram"] = [[int(slot), int(histogram[slot])] for slot in np.flatnonzero(histogram)]
    return summary


def cumulative_at(histogram: np.ndarray, every: int) -> list[tuple[float, int]]:
    """Cumulative counts at every `every`-th edge, then at +Inf (Prometheus' `le` buckets): a
    coarser histogram whose buckets are unions of the measured ones."""
    cumulative = np.cumsum(histogram)
    edges = bucket_edges()
    # Clients in slots 0..i have durations below edges[i].
    points = [(float(edges[i]), int(cumulative[i])) for i in range(0, BUCKETS + 1, every)]
    return [*points, (float("inf"), int(cumulative[-1]))]


def cdf(histogram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each slot's upper edge and the fraction of durations below it, for a step plot."""
    counts = np.asarray(histogram, dtype=np.float64)
    uppers = np.concatenate([bucket_edges(), [np.inf]])
    total = counts.sum()
    fraction = np.cumsum(counts) / total if total else np.zeros(SLOTS)
    return uppers, fraction
