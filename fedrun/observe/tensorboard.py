"""TensorBoard scalars per round, so a run can be watched with `tensorboard --logdir OUT/tb`.

One TensorBoard run per split (train, eval_round_clients, eval_heldout) with the same tags puts
train and eval loss in one chart; round timing and traffic go to the run "round", with the
clients' measured training times as p50/p95/p99/max scalars (a band) and a histogram per round.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from cluster import Worker
from fedrun.config import RunConfig
from fedrun.learning import client_time
from fedrun.loop.records import RoundRecord


def round_scalars(record: RoundRecord) -> dict[str, dict[str, float]]:
    """The scalars of one round, by TensorBoard run, then tag."""
    runs = {
        "round": {
            "time/latency_seconds": record.latency_s,
            "throughput/examples_per_second": record.examples_per_s,
            "throughput/clients_per_second": record.clients_per_s,
            "traffic/bytes_to_workers": record.bytes_to_workers,
            "traffic/bytes_from_workers": record.bytes_from_workers,
        },
    }
    if record.train:  # an abandoned round trains no one
        runs["train"] = {"model/loss": record.train["loss"], "model/accuracy": record.train["accuracy"]}
    if record.eval:
        runs["round"]["time/eval_latency_seconds"] = record.eval_latency_s
    if record.speculation is not None:
        runs["round"].update({f"speculation/{key}": value for key, value in record.speculation.items()})
    if record.client_time is not None:
        runs["round"].update(
            {f"clients/measured_seconds_{q}": record.client_time[q] for q in ("p50", "p95", "p99", "max")}
        )
    if record.sim is not None:
        sim = record.sim
        runs["round"].update(
            {
                "simulated/round_seconds": sim["round_s"],
                "simulated/clock_seconds": sim["clock_s"],
                "simulated/client_seconds_p50": sim["client_s"]["p50"],
                "simulated/client_seconds_p95": sim["client_s"]["p95"],
                "simulated/client_seconds_p99": sim["client_s"]["p99"],
                "simulated/reported": sim["reported"],
                **{f"simulated/dropped_{reason}": count for reason, count in sim["dropped"].items()},
            }
        )
    if record.buffered is not None:
        buffered = record.buffered
        runs["round"].update(
            {
                "buffered/version": buffered["version"],
                "buffered/in_flight": buffered["in_flight"],
                "buffered/results": buffered["buffered"],
                **{f"buffered/staleness_{key}": value for key, value in buffered["staleness"].items()},
                **{f"buffered/discarded_{reason}": n for reason, n in buffered["discarded"].items()},
            }
        )
    for group, metrics in record.eval.items():
        runs[f"eval_{group}"] = {"model/loss": metrics["loss"], "model/accuracy": metrics["accuracy"]}
    return runs


def bucket_values(pairs: list[list[int]]) -> np.ndarray:
    """Durations standing for a measured histogram: each bucket's geometric middle, once per client."""
    edges = client_time.bucket_edges()
    middles = np.sqrt(edges[:-1] * edges[1:])
    middles = np.concatenate([[edges[0] / 2], middles, [edges[-1]]])  # below and above the range
    return np.repeat(middles[[b for b, _ in pairs]], [c for _, c in pairs])


class TensorBoardLog:
    """A RunObserver writing `round_scalars` under `logdir`, flushed every round so a live
    TensorBoard sees a round as soon as it ends."""

    def __init__(self, logdir: Path):
        self._logdir = logdir
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def on_start(self, config: RunConfig, workers: list[Worker]) -> None:
        pass

    def on_round(self, record: RoundRecord) -> None:
        for run, scalars in round_scalars(record).items():
            self._write(run, record.round, scalars)
        if record.client_time is not None and record.client_time["count"]:
            writer = self._writer("round")
            with writer.as_default(step=record.round):
                durations = bucket_values(record.client_time["histogram"])
                tf.summary.histogram("clients/measured_seconds", durations)
            writer.flush()
        if record.sim is not None:  # accuracy against the simulated clock: step = simulated seconds
            for group, metrics in record.eval.items():
                self._write(
                    f"by_simulated_time/eval_{group}",
                    round(record.sim["clock_s"]),
                    {"model/accuracy": metrics["accuracy"]},
                )

    def _write(self, run: str, step: int, scalars: dict[str, float]) -> None:
        writer = self._writer(run)
        with writer.as_default(step=step):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value)
        writer.flush()

    def on_end(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, run: str) -> tf.summary.SummaryWriter:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(str(self._logdir / run))
        return self._writers[run]
