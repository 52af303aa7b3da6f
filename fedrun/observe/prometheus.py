"""Prometheus metrics of a run: served by the coordinator on /metrics, pushed to a Pushgateway, or both.

Every value comes from the RoundRecords that rounds.jsonl holds, so a dashboard and the run's
files agree. Names follow Prometheus conventions: `fedrun_` prefix, base units, `_total`
counters, `_seconds` histograms.
"""

import logging
import socket
import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from cluster import Worker
from fedrun.config import RunConfig
from fedrun.errors import FedrunError
from fedrun.learning import client_time
from fedrun.loop.records import RoundRecord
from fedrun.selection.policy import DROP_REASONS

log = logging.getLogger(__name__)

# From a small simulation's tens-of-milliseconds shards to rounds of many minutes.
DURATION_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    float("inf"),
)
# Simulated rounds of devices: from a second to a day.
SIMULATED_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, float("inf"))
# Server versions a buffered-async result is behind by (FedBuff's staleness).
STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, float("inf"))
PUSH_TIMEOUT_S = 5.0  # a push happens in the round loop: a dead gateway must not stall it for long


class _WholeRounds(Collector):
    """What /metrics and pushes read: a scrape waits for `on_round` to finish, so it never sees
    the counters of a round without its histogram observations or round number."""

    def __init__(self, registry: CollectorRegistry, lock: threading.Lock):
        self._registry = registry
        self._lock = lock

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            return list(self._registry.collect())

    def restricted_registry(self, names: Iterable[str]) -> Collector:
        """Serves `/metrics?name[]=...`, which the exposition code asks the registry for."""
        return _WholeRounds(self._registry.restricted_registry(names), self._lock)


class MeasuredClientTimes(Collector):
    """Each client's local training time as its worker measured it, by worker: the workers'
    histogram (learning.client_time) with every 12th of its edges kept, so the exported buckets
    are unions of the measured ones (a factor of 1.6 apart, 1 ms to 30 min) and lose nothing
    but resolution."""

    NAME = "fedrun_client_training_duration_seconds"
    DOC = "Local training time of each client, measured on its worker around its update."
    EVERY = 12

    def __init__(self) -> None:
        self._counts: dict[str, np.ndarray] = {}
        self._sums: dict[str, float] = {}

    def add(self, worker: str, measured: dict | None = None) -> None:
        """Adds a round's summary for one worker (client_time's by_worker entry); none: a zero series."""
        counts = self._counts.setdefault(worker, np.zeros(client_time.BUCKETS + 2, np.int64))
        self._sums.setdefault(worker, 0.0)
        if measured:
            counts += client_time.dense(measured["histogram"])
            self._sums[worker] += measured["mean"] * measured["count"]

    def describe(self) -> Iterable[Metric]:
        yield HistogramMetricFamily(self.NAME, self.DOC, labels=["worker"])

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.NAME, self.DOC, labels=["worker"])
        for worker in sorted(self._counts):
            buckets = client_time.cumulative_at(self._counts[worker], self.EVERY)
            family.add_metric(
                [worker], [(floatToGoString(le), count) for le, count in buckets], self._sums[worker]
            )
        yield family


class PrometheusMetrics:
    """A RunObserver that exports each finished round, failures and retries included.

    `set_workers_alive`, `record_failure` and `record_retry` are what `on_round` feeds from the
    round's record; code that calls them directly must not also report those events in records.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        pushgateway: str = "",
        run: str = "",
    ):
        self._port = port
        self._host = host
        self._pushgateway = pushgateway
        self._grouping_key = {"run": run} if run else {}  # runs pushing to one gateway stay apart
        self._lock = threading.Lock()
        self._view = _WholeRounds(registry, self._lock)
        self._server: WSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._push_failing = False
        if port:
            self._check_port_free()

        def histogram(name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, doc, labels, buckets=DURATION_BUCKETS, registry=registry)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self.round_duration = histogram(
            "fedrun_round_duration_seconds", "Wall time of a training round, sampling to new server state."
        )
        self.eval_duration = histogram(
            "fedrun_eval_duration_seconds", "Wall time of a round's federated evaluation, all groups."
        )
        self.shard_duration = histogram(
            "fedrun_shard_duration_seconds",
            "Wall time of one shard of a training round on a worker.",
            ("worker",),
        )
        self.client_duration = MeasuredClientTimes()
        registry.register(self.client_duration)
        self.clients = counter("fedrun_clients_trained_total", "Clients that took part in training rounds.")
        self.examples = counter(
            "fedrun_examples_trained_total", "Examples processed in training, all epochs."
        )
        self.bytes_sent = counter(
            "fedrun_sent_to_workers_bytes_total",
            "Serialized gRPC requests sent to workers in training rounds.",
        )
        self.bytes_received = counter(
            "fedrun_received_from_workers_bytes_total",
            "Serialized gRPC responses received from workers in training rounds.",
        )
        self.failures = counter(
            "fedrun_worker_failures_total", "Worker failures seen by the coordinator.", ("worker",)
        )
        self.retries = counter("fedrun_shard_retries_total", "Shards dispatched again after a failure.")
        self.recycles = counter(
            "fedrun_worker_recycles_total",
            "Workers replaced by fresh ones between rounds (recycle_workers_every).",
        )
        self.copies = counter(
            "fedrun_speculative_copies_total", "Speculative copies of slow shards started (--speculate)."
        )
        self.copy_wins = counter(
            "fedrun_speculative_wins_total", "Shards whose result came from their speculative copy."
        )
        self.copy_waste = counter(
            "fedrun_speculative_wasted_seconds_total",
            "Seconds the attempts that lost a speculative race ran before being cancelled.",
        )
        self.slowed = gauge(
            "fedrun_worker_slowdown_factor",
            "How many times slower a worker was made on purpose (--slow-worker); 1: not slowed.",
            ("worker",),
        )
        self.round = gauge(
            "fedrun_round", "Number of the last completed training round (0 before the first)."
        )
        # The simulated federation (--system-model): its virtual clock, rounds and devices.
        self.sim_clock = gauge(
            "fedrun_simulated_clock_seconds",
            "Virtual clock of the simulated federation after the last round.",
        )
        self.sim_round_duration = Histogram(
            "fedrun_simulated_round_duration_seconds",
            "Simulated time of a round on the virtual clock, selection to close.",
            buckets=SIMULATED_BUCKETS,
            registry=registry,
        )
        self.dropped = counter(
            "fedrun_clients_dropped_total",
            "Selected clients whose update did not count, by reason.",
            ("reason",),
        )
        self.abandoned = counter("fedrun_rounds_abandoned_total", "Rounds abandoned for too few reports.")
        self.never_participated = gauge(
            "fedrun_clients_never_participated_ratio",
            "Fraction of the population whose update has never counted so far.",
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        # Buffered-async aggregation (--aggregation buffered-async): versions, staleness, buffer.
        self.server_version = gauge(
            "fedrun_server_model_version", "Server model version after the last buffered-async update."
        )
        self.in_flight = gauge(
            "fedrun_clients_in_flight",
            "Clients training on the virtual clock at the last buffered-async update.",
        )
        self.buffered = counter(
            "fedrun_buffered_results_total", "Client results applied by buffered-async updates."
        )
        self.staleness = Histogram(
            "fedrun_update_staleness_versions",
            "Server versions between the model a counted result trained from and the update that applied it.",
            buckets=STALENESS_BUCKETS,
            registry=registry,
        )
        self.rounds_planned = gauge("fedrun_rounds_planned", "Training rounds the run is configured for.")
        self.workers_alive = gauge("fedrun_workers_alive", "Workers in the pool, as of the last round's end.")
        self.train_loss = gauge("fedrun_train_loss", "Mean client loss during local training, last round.")
        self.train_accuracy = gauge(
            "fedrun_train_accuracy", "Client accuracy (0-1) during local training, last round."
        )
        self.eval_loss = gauge(
            "fedrun_eval_loss", "Loss of the latest evaluated model, by client group.", ("group",)
        )
        self.eval_accuracy = gauge(
            "fedrun_eval_accuracy",
            "Accuracy (0-1) of the latest evaluated model, by client group.",
            ("group",),
        )

    def on_start(self, config: RunConfig, workers: list[Worker]) -> None:
        self.rounds_planned.set(config.workload.rounds)
        self.set_workers_alive(len(workers))
        for worker in workers:  # a worker without failures or shards yet shows 0, not a missing series
            self.failures.labels(worker.worker_id)
            self.shard_duration.labels(worker.worker_id)
            if config.observe.client_timing:
                self.client_duration.add(worker.worker_id)
        if self._port:
            try:
                self._server, self._server_thread = start_http_server(
                    self._port, self._host, registry=self._view
                )
            except OSError as e:
                raise self._port_error(e) from None

    def on_round(self, record: RoundRecord) -> None:
        with self._lock:
            self.round_duration.observe(record.latency_s)
            if record.eval:
                self.eval_duration.observe(record.eval_latency_s)
            for shard in record.shards:
                self.shard_duration.labels(shard.worker).observe(shard.end - shard.start)
            if record.client_time is not None:
                for worker, measured in record.client_time["by_worker"].items():
                    self.client_duration.add(worker, measured)
            self.clients.inc(record.clients)
            self.examples.inc(record.examples_trained)
            self.bytes_sent.inc(record.bytes_to_workers)
            self.bytes_received.inc(record.bytes_from_workers)
            if record.train:  # an abandoned round trains no one
                self.train_loss.set(record.train["loss"])
                self.train_accuracy.set(record.train["accuracy"])
            if record.sim is not None:
                self._observe_simulated(record.sim)
            if record.buffered is not None:
                self._observe_buffered(record.buffered)
            for group, metrics in record.eval.items():
                self.eval_loss.labels(group).set(metrics["loss"])
                self.eval_accuracy.labels(group).set(metrics["accuracy"])
            self.set_workers_alive(record.workers)
            for failure in record.failures:  # each failed shard was queued again
                self.record_failure(failure["worker"])
                self.record_retry()
            self.recycles.inc(len(record.recycled))
            if record.speculation is not None:
                self.copies.inc(record.speculation["copies"])
                self.copy_wins.inc(record.speculation["wins"])
                self.copy_waste.inc(record.speculation["wasted_s"])
            for worker in {s.worker for s in record.shards} | set(record.slowed):
                self.slowed.labels(worker).set(record.slowed.get(worker, {}).get("factor", 1.0))
            self.round.set(record.round)
        self._push()

    def _observe_simulated(self, sim: dict) -> None:
        self.sim_clock.set(sim["clock_s"])
        self.sim_round_duration.observe(sim["round_s"])
        for reason, count in sim["dropped"].items():
            self.dropped.labels(reason).inc(count)
        if sim["abandoned"]:
            self.abandoned.inc()
        if sim["participation"]:
            self.never_participated.set(sim["participation"]["never_fraction"])

    def _observe_buffered(self, buffered: dict) -> None:
        self.server_version.set(buffered["version"])
        self.in_flight.set(buffered["in_flight"])
        self.buffered.inc(buffered["buffered"])
        for staleness, count in buffered["staleness_counts"].items():
            for _ in range(count):
                self.staleness.observe(int(staleness))

    def on_end(self) -> None:
        self._push()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server_thread.join()
            self._server = None

    def set_workers_alive(self, count: int) -> None:
        self.workers_alive.set(count)

    def record_failure(self, worker: str) -> None:
        self.failures.labels(worker).inc()

    def record_retry(self) -> None:
        self.retries.inc()

    def _check_port_free(self) -> None:
        """Binds and releases the port now, so a taken port fails before any worker starts."""
        try:
            family, _, _, _, address = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)[0]
            socket.create_server(address, family=family).close()
        except OSError as e:
            raise self._port_error(e) from None

    def _port_error(self, error: OSError) -> FedrunError:
        return FedrunError(
            f"cannot serve metrics on {self._host}:{self._port} ({error.strerror or error}): "
            f"choose a free --metrics-port or another --metrics-host"
        )

    def _push(self) -> None:
        """Replaces the run's metrics on the gateway; a failed push warns once per outage and never
        stops the run."""
        if not self._pushgateway:
            return
        try:
            push_to_gateway(
                self._pushgateway,
                job="fedrun",
                registry=self._view,
                timeout=PUSH_TIMEOUT_S,
                grouping_key=self._grouping_key,
            )
        except (OSError, ValueError) as e:
            if not self._push_failing:
                log.warning(
                    "cannot push metrics to the Pushgateway at %s (%s); the run goes "
                    "on, and this is not repeated until a push succeeds",
                    self._pushgateway,
                    e,
                )
            self._push_failing = True
        else:
            self._push_failing = False
