"""What each line of rounds.jsonl holds: one training round, its shards and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ShardRecord:
    shard: int
    worker: str
    clients: list[str]
    examples: int  # examples the shard's clients hold (one epoch)
    start: float  # seconds since the run started
    end: float
    slowest_client_s: float | None = None  # its slowest client's training, measured on the worker
    backup: bool = False  # the result came from a speculative copy (its original lost)


@dataclass(frozen=True)
class RoundRecord:
    round: int
    latency_s: float  # wall time of the training round, sharding to new server state
    start: float  # seconds since the run started
    clients: int
    examples: int  # examples the round's clients hold (one epoch)
    examples_trained: int  # examples processed, all epochs
    clients_per_s: float
    examples_per_s: float  # examples_trained / latency_s
    shards: list[ShardRecord]
    bytes_to_workers: int  # serialized gRPC requests of the training round, all workers
    bytes_from_workers: int
    workers: int  # workers in the pool at the end of the round
    failures: list[dict[str, Any]]  # workers lost during the round; their shards ran again
    train: dict[str, float]
    eval: dict[str, dict[str, float]] = field(default_factory=dict)
    eval_latency_s: float = 0.0
    recycled: list[str] = field(default_factory=list)  # workers made fresh before the round
    wall: dict[str, float] = field(default_factory=dict)  # shard wall times: p50, p95, p99, max
    # The clients' local-training wall times measured on the workers: p50, p95, p99, max, mean,
    # count, the histogram's nonzero [bucket, count] pairs (learning.client_work), and by_worker.
    client_time: dict[str, Any] | None = None
    # With a system model: the round on the virtual clock (round_s, clock_s, selected, reported,
    # dropped by reason, abandoned, client_s percentiles, participation so far).
    sim: dict[str, Any] | None = None
    # With --speculate: copies started, copies that won, and the seconds the losing attempts ran.
    speculation: dict[str, Any] | None = None
    # The attempts that lost a race (shard, worker, start, end, backup), for the Gantt chart.
    lost_copies: list[dict[str, Any]] = field(default_factory=list)
    slowed: dict[str, dict[str, Any]] = field(default_factory=dict)  # worker -> factor, mechanism
    speeds: dict[str, float] | None = None  # speed-sized shards: seconds per unit of work, by worker
    # Buffered-async: the server version this update made, its results' staleness (p50, max,
    # mean, and results by staleness), results discarded since the last update by reason,
    # clients started and in flight.
    buffered: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RoundRecord:
        """Raises TypeError or KeyError for an object that is not a round record of this version."""
        return cls(**{**raw, "shards": [ShardRecord(**s) for s in raw["shards"]]})


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of durations (all 0 for none), as the records hold them."""
    if not len(values):
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(np.max(values))}
