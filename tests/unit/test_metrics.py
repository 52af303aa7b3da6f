"""The Prometheus observer, fed RoundRecords directly: no workers, a fresh registry per test."""

import dataclasses
import logging
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cluster import Worker
from fedrun.config import RunConfig
from fedrun.errors import FedrunError
from fedrun.loop.records import RoundRecord, ShardRecord
from fedrun.observe.prometheus import PrometheusMetrics
from tests.support.client_times import summary
from tests.support.configs import flat_config
from tests.support.prometheus import free_port, samples, scrape, stand_in_pushgateway

WORKERS = [Worker("local-0", "127.0.0.1:1"), Worker("local-1", "127.0.0.1:2")]


def round_record(
    number: int, *, latency: float = 2.0, failures: tuple[str, ...] = (), workers: int = 2, loss: float = 1.5
) -> RoundRecord:
    """A round of 5 clients in two shards: local-0 trains 3 clients for 0.9 s, local-1 2 clients for
    0.4 s; the workers measured the clients at 0.1, 0.2, 0.5 s (local-0) and 0.3, 0.05 s (local-1)."""
    start = 10.0 * number
    return RoundRecord(
        round=number,
        latency_s=latency,
        start=start,
        clients=5,
        examples=500,
        examples_trained=1000,
        clients_per_s=5 / latency,
        examples_per_s=1000 / latency,
        shards=[
            ShardRecord(0, "local-0", ["a", "b", "c"], 300, start, start + 0.9),
            ShardRecord(1, "local-1", ["d", "e"], 200, start, start + 0.4),
        ],
        bytes_to_workers=7000,
        bytes_from_workers=3000,
        workers=workers,
        failures=[{"worker": w, "shard": 0, "error": "exited", "replaced": True} for w in failures],
        train={"loss": loss, "accuracy": 0.25, "num_examples": 1000},
        eval={"round_clients": {"loss": 1.25, "accuracy": 0.5}, "heldout": {"loss": 1.75, "accuracy": 0.375}},
        eval_latency_s=0.5,
        client_time={"by_worker": {"local-0": summary([0.1, 0.2, 0.5]), "local-1": summary([0.3, 0.05])}},
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_rounds_become_counters_histograms_and_gauges(registry):
    metrics = PrometheusMetrics(registry)
    metrics.on_start(flat_config(rounds=7), WORKERS)
    metrics.on_round(round_record(1, latency=2.0, loss=1.5))
    metrics.on_round(round_record(2, latency=0.3, loss=1.0))
    value = registry.get_sample_value

    assert value("fedrun_round") == 2 and value("fedrun_rounds_planned") == 7
    assert value("fedrun_round_duration_seconds_count") == 2
    assert value("fedrun_round_duration_seconds_sum") == pytest.approx(2.3)
    assert value("fedrun_round_duration_seconds_bucket", {"le": "0.5"}) == 1
    assert value("fedrun_round_duration_seconds_bucket", {"le": "2.5"}) == 2
    assert value("fedrun_eval_duration_seconds_sum") == pytest.approx(1.0)
    assert value("fedrun_clients_trained_total") == 10
    assert value("fedrun_examples_trained_total") == 2000
    assert value("fedrun_sent_to_workers_bytes_total") == 14000
    assert value("fedrun_received_from_workers_bytes_total") == 6000
    assert value("fedrun_shard_duration_seconds_count", {"worker": "local-0"}) == 2
    assert value("fedrun_shard_duration_seconds_sum", {"worker": "local-0"}) == pytest.approx(1.8)
    assert value("fedrun_shard_duration_seconds_sum", {"worker": "local-1"}) == pytest.approx(0.8)
    assert value("fedrun_train_loss") == 1.0 and value("fedrun_train_accuracy") == 0.25
    assert value("fedrun_eval_accuracy", {"group": "heldout"}) == 0.375
    assert value("fedrun_eval_loss", {"group": "round_clients"}) == 1.25


def test_client_times_are_the_workers_measurements_by_worker(registry):
    metrics = PrometheusMetrics(registry)
    metrics.on_round(round_record(1))
    metrics.on_round(round_record(2))
    value = registry.get_sample_value
    name = "fedrun_client_training_duration_seconds"
    assert value(f"{name}_count", {"worker": "local-0"}) == 6
    assert value(f"{name}_sum", {"worker": "local-0"}) == pytest.approx(1.6)
    assert value(f"{name}_sum", {"worker": "local-1"}) == pytest.approx(0.7)
    # Buckets are the measured ones' edges, every 12th: 1 ms * 1.04**(12 k).
    edges = {float(s.labels["le"]): s.value for s in _samples(registry, f"{name}_bucket", "local-1")}
    below = {le: count for le, count in edges.items() if le < 1}
    assert list(below) == pytest.approx([0.001 * 1.04 ** (12 * k) for k in range(len(below))])
    for le, count in edges.items():  # two rounds of a 0.05 s and a 0.3 s client
        assert count == (0 if le < 0.05 else 2 if le < 0.3 else 4), le
    help_text = next(f.documentation for f in registry.collect() if f.name == name)
    assert "measured on its worker" in help_text


def _samples(registry: CollectorRegistry, name: str, worker: str) -> list:
    return [
        s for f in registry.collect() for s in f.samples if s.name == name and s.labels["worker"] == worker
    ]


def test_without_client_timing_no_client_series(registry):
    metrics = PrometheusMetrics(registry)
    metrics.on_start(flat_config(client_timing=False), WORKERS)
    metrics.on_round(dataclasses.replace(round_record(1), client_time=None))
    assert (
        registry.get_sample_value("fedrun_client_training_duration_seconds_count", {"worker": "local-0"})
        is None
    )


def test_every_worker_has_a_zero_series_from_the_start(registry):
    PrometheusMetrics(registry).on_start(RunConfig(), WORKERS)
    value = registry.get_sample_value
    assert value("fedrun_workers_alive") == 2
    for worker in ("local-0", "local-1"):
        assert value("fedrun_worker_failures_total", {"worker": worker}) == 0
        assert value("fedrun_shard_duration_seconds_count", {"worker": worker}) == 0
        assert value("fedrun_client_training_duration_seconds_count", {"worker": worker}) == 0
    assert value("fedrun_shard_retries_total") == 0


def test_failures_retries_and_live_workers(registry):
    metrics = PrometheusMetrics(registry)
    metrics.on_start(RunConfig(), WORKERS)
    metrics.on_round(round_record(1, failures=("local-1", "local-1"), workers=1))
    value = registry.get_sample_value
    assert value("fedrun_worker_failures_total", {"worker": "local-1"}) == 2
    assert value("fedrun_worker_failures_total", {"worker": "local-0"}) == 0
    assert value("fedrun_shard_retries_total") == 2
    assert value("fedrun_workers_alive") == 1

    metrics.record_failure("local-0")
    metrics.record_retry()
    metrics.set_workers_alive(3)
    assert value("fedrun_worker_failures_total", {"worker": "local-0"}) == 1
    assert value("fedrun_shard_retries_total") == 3
    assert value("fedrun_workers_alive") == 3


def test_serves_metrics_on_loopback_until_the_run_ends(registry):
    port = free_port()
    metrics = PrometheusMetrics(registry, port=port)
    metrics.on_start(flat_config(rounds=7), WORKERS)
    try:
        listening = [
            c.laddr
            for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert [address.ip for address in listening] == ["127.0.0.1"]
        assert samples(scrape(port))[("fedrun_round", ())] == 0
        metrics.on_round(round_record(1))
        scraped = samples(scrape(port))
        assert scraped[("fedrun_round", ())] == 1
        assert scraped[("fedrun_examples_trained_total", ())] == 1000
        assert scraped[("fedrun_worker_failures_total", (("worker", "local-1"),))] == 0
    finally:
        metrics.on_end()
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_a_port_in_use_is_a_clear_error_before_the_run_starts(registry):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(FedrunError, match="127.0.0.1:[0-9]+ .*choose a free --metrics-port"):
            PrometheusMetrics(registry, port=taken.getsockname()[1])


def test_a_port_taken_after_construction_fails_on_start(registry):
    port = free_port()
    metrics = PrometheusMetrics(registry, port=port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(FedrunError, match="choose a free --metrics-port"):
            metrics.on_start(RunConfig(), WORKERS)
    metrics.on_end()


def test_pushes_after_every_round_and_at_the_end(registry):
    with stand_in_pushgateway() as (url, received):
        metrics = PrometheusMetrics(registry, pushgateway=url)
        metrics.on_start(RunConfig(), WORKERS)
        metrics.on_round(round_record(1))
        metrics.on_round(round_record(2))
        metrics.on_end()
    assert [(method, path) for method, path, _ in received] == [("PUT", "/metrics/job/fedrun")] * 3
    assert samples(received[0][2])[("fedrun_round", ())] == 1
    last = samples(received[-1][2])
    assert last[("fedrun_round", ())] == 2 and last[("fedrun_examples_trained_total", ())] == 2000


def test_a_failed_push_warns_once_and_the_run_goes_on(registry, caplog):
    metrics = PrometheusMetrics(registry, pushgateway=f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="fedrun.observe.prometheus"):
        metrics.on_round(round_record(1))
        metrics.on_round(round_record(2))
        metrics.on_end()
    assert registry.get_sample_value("fedrun_round") == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cannot push metrics to the Pushgateway" in warnings[0]


def test_a_scrape_never_sees_half_a_round(registry):
    """Scrapes race with on_round; each must show whole rounds only (counts agree with the round number)."""
    port = free_port()
    metrics = PrometheusMetrics(registry, port=port)
    metrics.on_start(RunConfig(), WORKERS)
    stop = threading.Event()

    def rounds() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            metrics.on_round(round_record(number))

    writer = threading.Thread(target=rounds)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # many more thread switches: a torn scrape shows up within a few tries
    writer.start()
    try:
        for _ in range(100):
            scraped = samples(scrape(port))
            done = scraped[("fedrun_round", ())]
            assert scraped[("fedrun_round_duration_seconds_count", ())] == done
            assert scraped[("fedrun_examples_trained_total", ())] == 1000 * done
            measured = sum(
                scraped[("fedrun_client_training_duration_seconds_count", (("worker", w.worker_id),))]
                for w in WORKERS
            )
            assert measured == 5 * done
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(switch_interval)
        metrics.on_end()
    assert done > 0


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus provides it)"
)
def test_exposition_passes_promtool_lint(registry):
    metrics = PrometheusMetrics(registry)
    metrics.on_start(RunConfig(), WORKERS)
    metrics.on_round(round_record(1, failures=("local-1",)))
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=generate_latest(registry), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode() + result.stderr.decode() == ""


def simulated(record: RoundRecord, *, round_s: float, clock_s: float, abandoned: bool = False) -> RoundRecord:
    sim = {
        "round_s": round_s,
        "clock_s": clock_s,
        "selected": 8,
        "reported": 5,
        "abandoned": abandoned,
        "dropped": {"deadline": 2, "over_selection": 0, "dropout": 1, "unavailable": 0},
        "client_s": {"p50": 3.0, "p95": 9.0, "p99": 9.5, "max": 10.0},
        "participation": {
            "population": 100,
            "clients_contributed": 5,
            "never_fraction": 0.95,
            "fastest_quartile_share": 0.4,
            "slowest_quartile_share": 0.2,
        },
    }
    if abandoned:
        return dataclasses.replace(record, sim=sim, train={}, examples_trained=0)
    return dataclasses.replace(record, sim=sim)


def test_the_simulated_federation_is_exported(registry):
    metrics = PrometheusMetrics(registry)
    metrics.on_start(RunConfig(), WORKERS)
    metrics.on_round(simulated(round_record(1, loss=1.5), round_s=40.0, clock_s=40.0))
    metrics.on_round(simulated(round_record(2), round_s=600.0, clock_s=640.0, abandoned=True))
    value = registry.get_sample_value

    assert value("fedrun_simulated_clock_seconds") == 640.0
    assert value("fedrun_simulated_round_duration_seconds_count") == 2
    assert value("fedrun_simulated_round_duration_seconds_bucket", {"le": "60.0"}) == 1
    assert value("fedrun_clients_dropped_total", {"reason": "deadline"}) == 4
    assert value("fedrun_clients_dropped_total", {"reason": "unavailable"}) == 0
    assert value("fedrun_rounds_abandoned_total") == 1
    assert value("fedrun_clients_never_participated_ratio") == 0.95
    assert value("fedrun_train_loss") == 1.5  # the abandoned round trained no one: the last loss stays


def buffered(record: RoundRecord, version: int, staleness_counts: dict[str, int]) -> RoundRecord:
    return dataclasses.replace(
        simulated(record, round_s=5.0, clock_s=5.0 * version),
        buffered={
            "version": version,
            "clock_s": 5.0 * version,
            "buffered": sum(staleness_counts.values()),
            "started": 4,
            "in_flight": 12,
            "staleness": {"p50": 1.0, "max": 3, "mean": 1.2},
            "staleness_counts": staleness_counts,
            "discarded": {"stale": 1, "dropout": 0, "unavailable": 0},
            "versions_kept": 3,
        },
    )


def test_buffered_async_versions_staleness_and_buffer_are_exported(registry):
    metrics = PrometheusMetrics(registry)
    metrics.on_start(RunConfig(), WORKERS)
    metrics.on_round(buffered(round_record(1), 1, {"0": 4}))
    metrics.on_round(buffered(round_record(2), 2, {"0": 1, "1": 2, "3": 1}))
    value = registry.get_sample_value

    assert value("fedrun_server_model_version") == 2
    assert value("fedrun_clients_in_flight") == 12
    assert value("fedrun_buffered_results_total") == 8
    assert value("fedrun_update_staleness_versions_count") == 8
    assert value("fedrun_update_staleness_versions_bucket", {"le": "0.0"}) == 5
    assert value("fedrun_update_staleness_versions_bucket", {"le": "2.0"}) == 7
    assert value("fedrun_update_staleness_versions_sum") == 5
    assert value("fedrun_clients_dropped_total", {"reason": "deadline"}) == 4  # the sim dict's
