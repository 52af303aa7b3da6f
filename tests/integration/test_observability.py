"""A real `fedrun run` watched as a user would: /metrics scraped while it runs, pushes to a
(stand-in) Pushgateway, TensorBoard event files and `fedrun report` afterwards, all checked
against the rounds.jsonl the run wrote."""

import base64
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from tests.support.prometheus import Samples, free_port, samples, stand_in_pushgateway

pytestmark = pytest.mark.timeout(300)

ROUNDS = 8
RUN = f"--rounds {ROUNDS} --clients-per-round 8 --epochs 1 --population 100 --eval-clients 4".split()
RUN += ["--workers", "2", "--shards", "3", "--no-progress"]


@dataclass
class ObservedRun:
    out: Path
    scrapes: list[tuple[Samples, list[dict]]]  # each scrape, and rounds.jsonl read just after it
    listening_ips: list[str]  # addresses the metrics port was bound to, seen while running
    reachable_elsewhere: list[str]  # non-loopback addresses of this machine that accepted a connection
    refused_after_exit: bool
    pushes: list[tuple[str, str, str]]
    returncode: int
    stderr: str


def accepts(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((ip, port)) == 0


def rounds_in(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]


def scrape_when(port: int, process: subprocess.Popen, round_at_least: int, timeout: float = 180) -> Samples:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"fedrun exited ({process.returncode}) before round {round_at_least}: {process.stderr.read()}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                scraped = samples(response.read().decode())
            if scraped[("fedrun_round", ())] >= round_at_least:
                return scraped
        except OSError:
            pass  # not serving yet: workers are still starting
        time.sleep(0.05)
    raise AssertionError(f"/metrics never showed round {round_at_least} within {timeout}s")


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> ObservedRun:
    out = tmp_path_factory.mktemp("observed") / "run"
    port = free_port()
    elsewhere = [
        a.address
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    with stand_in_pushgateway() as (gateway, pushes):
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedrun",
                "run",
                *RUN,
                "--metrics-port",
                str(port),
                "--pushgateway",
                gateway,
                "--out",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            scrapes = []
            for round_at_least in (1, 3):
                scraped = scrape_when(port, process, round_at_least)
                scrapes.append((scraped, rounds_in(out)))  # metrics change only after rounds.jsonl grows
            listening = [
                c.laddr.ip
                for c in psutil.Process(process.pid).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
            reachable = [ip for ip in elsewhere if accepts(ip, port)]
            _, stderr = process.communicate(timeout=240)
        finally:
            process.kill()
            process.wait()
    return ObservedRun(
        out, scrapes, listening, reachable, not accepts("127.0.0.1", port), pushes, process.returncode, stderr
    )


def test_the_run_succeeds(observed):
    assert observed.returncode == 0, observed.stderr
    assert len(rounds_in(observed.out)) == ROUNDS


def test_metrics_scraped_while_running_match_rounds_jsonl(observed):
    for scraped, rounds_after in observed.scrapes:
        done = int(scraped[("fedrun_round", ())])
        assert 1 <= done <= len(rounds_after)
        rounds = rounds_after[:done]
        assert [r["round"] for r in rounds] == list(range(1, done + 1))

        assert scraped[("fedrun_rounds_planned", ())] == ROUNDS
        assert scraped[("fedrun_workers_alive", ())] == 2
        assert scraped[("fedrun_round_duration_seconds_count", ())] == done
        assert scraped[("fedrun_round_duration_seconds_sum", ())] == pytest.approx(
            sum(r["latency_s"] for r in rounds)
        )
        assert scraped[("fedrun_examples_trained_total", ())] == sum(r["examples_trained"] for r in rounds)
        assert scraped[("fedrun_clients_trained_total", ())] == sum(r["clients"] for r in rounds)
        assert scraped[("fedrun_sent_to_workers_bytes_total", ())] == sum(
            r["bytes_to_workers"] for r in rounds
        )
        assert scraped[("fedrun_received_from_workers_bytes_total", ())] == sum(
            r["bytes_from_workers"] for r in rounds
        )
        for worker in ("local-0", "local-1"):
            shards = [s for r in rounds for s in r["shards"] if s["worker"] == worker]
            assert scraped[("fedrun_shard_duration_seconds_count", (("worker", worker),))] == len(shards)
            assert scraped[("fedrun_shard_duration_seconds_sum", (("worker", worker),))] == pytest.approx(
                sum(s["end"] - s["start"] for s in shards)
            )
            assert scraped[("fedrun_worker_failures_total", (("worker", worker),))] == 0
            measured = [r["client_time"]["by_worker"].get(worker) for r in rounds]
            name = "fedrun_client_training_duration_seconds"
            assert scraped[(f"{name}_count", (("worker", worker),))] == sum(m["count"] for m in measured if m)
            assert scraped[(f"{name}_sum", (("worker", worker),))] == pytest.approx(
                sum(m["mean"] * m["count"] for m in measured if m)
            )
        assert sum(r["client_time"]["count"] for r in rounds) == sum(r["clients"] for r in rounds)
        assert scraped[("fedrun_train_loss", ())] == pytest.approx(rounds[-1]["train"]["loss"])
        for group in ("round_clients", "heldout"):
            assert scraped[("fedrun_eval_accuracy", (("group", group),))] == pytest.approx(
                rounds[-1]["eval"][group]["accuracy"]
            )
    assert observed.scrapes[1][0][("fedrun_round", ())] >= 3


def test_metrics_listen_on_loopback_only_and_stop_with_the_run(observed):
    assert observed.listening_ips == ["127.0.0.1"]
    assert observed.reachable_elsewhere == []
    assert observed.refused_after_exit


def test_every_round_and_the_end_are_pushed(observed):
    # The run's own group (its --out directory, base64 in the path as it holds slashes).
    run = base64.urlsafe_b64encode(str(observed.out.resolve()).encode()).decode()
    assert [(method, path) for method, path, _ in observed.pushes] == [
        ("PUT", f"/metrics/job/fedrun/run@base64/{run}")
    ] * (ROUNDS + 1)
    rounds = rounds_in(observed.out)
    for number, (_, _, body) in enumerate(observed.pushes[:ROUNDS], 1):
        assert samples(body)[("fedrun_round", ())] == number
    final = samples(observed.pushes[-1][2])
    assert final[("fedrun_examples_trained_total", ())] == sum(r["examples_trained"] for r in rounds)
    assert final[("fedrun_round_duration_seconds_count", ())] == ROUNDS


def tensorboard_tensors(run_dir: Path) -> dict[str, dict[int, np.ndarray]]:
    events = EventAccumulator(str(run_dir), size_guidance={TENSORS: 0})
    events.Reload()
    return {
        tag: {e.step: make_ndarray(e.tensor_proto) for e in events.Tensors(tag)}
        for tag in events.Tags()["tensors"]
    }


def test_tensorboard_scalars_match_rounds_jsonl(observed):
    rounds = rounds_in(observed.out)
    steps = [r["round"] for r in rounds]
    tb = observed.out / "tb"
    assert sorted(p.name for p in tb.iterdir()) == ["eval_heldout", "eval_round_clients", "round", "train"]

    def check(run: str, tag: str, values: list[float]) -> None:
        written = tensorboard_tensors(tb / run)[tag]
        assert list(written) == steps, f"{run}/{tag}"
        np.testing.assert_allclose(
            [float(v) for v in written.values()], values, rtol=1e-6, err_msg=f"{run}/{tag}"
        )

    for metric in ("loss", "accuracy"):
        check("train", f"model/{metric}", [r["train"][metric] for r in rounds])
        for group in ("round_clients", "heldout"):
            check(f"eval_{group}", f"model/{metric}", [r["eval"][group][metric] for r in rounds])
    check("round", "time/latency_seconds", [r["latency_s"] for r in rounds])
    check("round", "time/eval_latency_seconds", [r["eval_latency_s"] for r in rounds])
    check("round", "throughput/examples_per_second", [r["examples_per_s"] for r in rounds])
    check("round", "throughput/clients_per_second", [r["clients_per_s"] for r in rounds])
    check("round", "traffic/bytes_to_workers", [r["bytes_to_workers"] for r in rounds])
    check("round", "traffic/bytes_from_workers", [r["bytes_from_workers"] for r in rounds])
    for q in ("p50", "p95", "p99", "max"):
        check("round", f"clients/measured_seconds_{q}", [r["client_time"][q] for r in rounds])
    # The histogram summary: (left, right, count) rows counting every client of the round.
    histograms = tensorboard_tensors(tb / "round")["clients/measured_seconds"]
    assert list(histograms) == steps
    for record, histogram in zip(rounds, histograms.values()):
        assert histogram[:, 2].sum() == record["client_time"]["count"] == record["clients"]
        assert histogram[0, 0] <= record["client_time"]["p50"] <= histogram[-1, 1]


def test_report_of_the_run(observed):
    result = subprocess.run(
        [sys.executable, "-m", "fedrun", "report", str(observed.out), "--round", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = observed.out / "report"
    for name in ("accuracy.png", "loss.png", "latency.png", "latency_cdf.png", "shards_round_2.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        assert struct.unpack(">II", data[16:24])[0] >= 1000
    summary = (report / "summary.md").read_text()
    assert f"| rounds in rounds.jsonl | {ROUNDS} of {ROUNDS} planned |" in summary
    examples = sum(r["examples_trained"] for r in rounds_in(observed.out))
    assert f"| examples trained (all epochs) | {examples} |" in summary


def test_a_taken_metrics_port_fails_before_workers_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedrun",
                "run",
                *RUN,
                "--metrics-port",
                str(taken.getsockname()[1]),
                "--out",
                str(tmp_path / "run"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert "choose a free --metrics-port" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "workers").exists()  # failed before any worker was started
    assert time.monotonic() - started < 30
