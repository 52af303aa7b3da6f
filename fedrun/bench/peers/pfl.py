"""fedrun beside Apple's pfl-research (pfl 0.6.0, TensorFlow backend) on one .npz workload, rounds
interleaved: examples/s of each, and whether they end with the same model.

pfl needs TensorFlow 2.21 and Keras 3, so it runs in an environment of its own (`make
bench-peers` builds .venv-peers) as fedrun.bench.peers.pfl_runner, which this parent drives
round by round over JSON lines. Both train the same clients with the same shuffle seeds, from
the same initial weights, on the same examples in the same order; pfl runs on 1 and N processes
(its own multi-worker mode).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedrun.bench.compare import interleaved
from fedrun.bench.process_tree import PeakMemorySampler, tree_cpu_seconds
from fedrun.bench.systems import build_and_start, system_processes
from fedrun.config import RunConfig
from fedrun.errors import FedrunError
from fedrun.observe.summary import column_table
from fedrun.stopping import STOP

PEERS_VENV = Path(__file__).resolve().parents[3] / ".venv-peers"
RUNNER = Path(__file__).with_name("pfl_runner.py")
# pfl computes the same float32 math with Keras 3 and TensorFlow 2.21 (fedrun: Keras 2, TF 2.14),
# its loss and gradient formulated slightly differently: they agree to float32 rounding, as the
# bench's TF loop does (fedrun.bench.config.TF_LOOP_MAX_WEIGHT_DIFF), far below a round's change.
MAX_WEIGHT_DIFF = 1e-4
CALL_TIMEOUT_S = 600.0  # one command (a round, start-up): generous, but a hung runner must not hang the bench


def pfl_side_by_side(config: RunConfig, processes: Sequence[int] | None = None) -> dict[str, Any]:
    """fedrun (the workload's workers) and pfl on each of `processes` process counts (default: 1
    and fedrun's worker count), all on the workload's .npz file, rounds interleaved and rotated:
    one untimed round each, then rounds - 1 timed. Returns {"workload", "rows", "agreement"}."""
    python = _peers_python()
    _check_workload(config)
    w = config.workload
    counts = sorted(set(processes or (1, config.workers.count)))
    cohorts, scale, classes = _cohorts(config, w.rounds, w.clients_per_round)
    peers = {f"pfl, {n} process{'es' if n > 1 else ''}": n for n in counts}
    with (
        PeakMemorySampler() as sampler,
        system_processes({"fedrun": ("fedrun", config)}, sampler) as children,
        contextlib.ExitStack() as stack,
    ):
        runners = {
            name: stack.enter_context(PflRunner(python, config, n, scale, classes))
            for name, n in peers.items()
        }
        build_and_start(children)
        initial = children["fedrun"].call("weights")
        for name, runner in runners.items():
            sampler.watch(name, runner.process.pid)
            runner.start(initial)
        next_round = dict.fromkeys(["fedrun", *runners], 1)

        def run(name: str, clients: int) -> dict[str, Any]:
            STOP.check()
            r = next_round[name]
            next_round[name] += 1
            if name == "fedrun":
                return children[name].round(r, clients)
            return runners[name].round(r, cohorts[r - 1])

        points = [(name, w.clients_per_round) for name in next_round]
        records = interleaved(points, w.rounds - 1, run)
        weights = {"fedrun": children["fedrun"].call("weights")}
        weights.update({name: runner.weights() for name, runner in runners.items()})
        peak_rss = {name: sampler.peaks(name)[0] for name, _ in points}
    rows = [
        _row(name, peers.get(name, config.workers.count), records[(name, k)], peak_rss[name])
        for name, k in points
    ]
    for row in rows:
        row["fedrun_vs_this"] = rows[0]["examples_per_s"] / row["examples_per_s"]
    diffs = {
        name: max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(weights[name], weights["fedrun"])
        )
        for name in runners
    }
    return {
        "workload": {
            "data": config.data.source,
            "clients_per_round": w.clients_per_round,
            "epochs": w.epochs,
            "batch_size": w.batch_size,
            "rounds": w.rounds,
            "fedrun_workers": config.workers.count,
        },
        "rows": rows,
        "agreement": {
            "max_weight_diff_vs_fedrun": diffs,
            "tolerance": MAX_WEIGHT_DIFF,
            "passed": all(d <= MAX_WEIGHT_DIFF for d in diffs.values()),
        },
    }


def peers_table(result: dict[str, Any]) -> str:
    w, a = result["workload"], result["agreement"]
    rows = [
        [
            r["system"],
            str(r["processes"]),
            f"{r['examples_per_s']:,.0f}",
            f"{r['round_latency_median_s']:.3f}",
            f"{r['cpu_cores_busy']:.2f}",
            f"{r['fedrun_vs_this']:.2f}x",
            f"{r['peak_tree_rss_bytes'] / 2**20:.0f} MiB",
        ]
        for r in result["rows"]
    ]
    diffs = ", ".join(f"{name} {d:.1e}" for name, d in a["max_weight_diff_vs_fedrun"].items())
    return "\n".join(
        [
            f"fedrun beside pfl-research 0.6.0 (TensorFlow backend): K={w['clients_per_round']} "
            f"clients/round, {w['epochs']} epochs, batch {w['batch_size']}, {w['rounds']} rounds on "
            f"{w['data']}; rounds interleaved; medians over rounds 2-{w['rounds']}",
            column_table(
                ["", "processes", "examples/s", "round p50 s", "cores busy", "fedrun / this", "peak RSS"],
                rows,
            ),
            "fedrun's processes: its local workers (beside its coordinator); pfl's rounds include putting "
            "their clients' examples in fedrun's shuffled order (tf.data): "
            + ", ".join(
                f"{r['system']} {1000 * r['data_s_median']:.0f} ms a round, "
                f"{r['examples_per_s_without_data']:,.0f} examples/s without it"
                for r in result["rows"]
                if "data_s_median" in r
            ),
            f"agreement with fedrun: max |w - w_fedrun| {diffs} (tolerance {a['tolerance']:.0e}): "
            + ("OK" if a["passed"] else "FAILED"),
        ]
    )


def _row(name: str, processes: int, records: list[dict[str, Any]], peak_rss: int) -> dict[str, Any]:
    """One system's timed rounds; `processes` is fedrun's worker count (beside its coordinator)."""
    latencies = [r["latency_s"] for r in records]
    row = {
        "system": name,
        "processes": processes,
        "examples_per_s": float(np.median([r["num_examples"] / r["latency_s"] for r in records])),
        "round_latency_median_s": float(np.median(latencies)),
        "cpu_cores_busy": sum(r["cpu_s"] for r in records) / sum(r["wall_s"] for r in records),
        "peak_tree_rss_bytes": peak_rss,
        "latencies_s": latencies,
    }
    if "data_s" in records[0]:  # pfl: of its latency, worker 0 putting its clients in fedrun's order
        row["data_s_median"] = float(np.median([r["data_s"] for r in records]))
        row["examples_per_s_without_data"] = float(
            np.median([r["num_examples"] / (r["latency_s"] - r["data_s"]) for r in records])
        )
    return row


def _peers_python() -> Path:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        raise FedrunError(
            f"pfl-research runs in an environment of its own, {PEERS_VENV}, which is missing: "
            f"build it with `make bench-peers`"
        )
    return python


def _check_workload(config: RunConfig) -> None:
    """What the runner reproduces of fedrun's data and FedAvg; anything else is refused."""
    data, w = config.data, config.workload
    if not data.source.endswith(".npz") or data.test_data or data.partition:
        raise FedrunError(
            "the pfl side by side runs on an .npz file with a client array (--data FILE.npz), "
            "without --test-data or --partition"
        )
    plain = (w.client_optimizer, w.server_optimizer) == ("sgd", "sgd") and not (
        w.client_momentum or w.server_momentum
    )
    if w.model != "linear" or not plain:
        raise FedrunError(
            "the pfl side by side trains fedrun's linear model with plain client and server SGD: "
            "keep --model linear and the default optimizers"
        )


def _cohorts(config: RunConfig, rounds: int, k: int) -> tuple[list[list[str]], float | None, int]:
    """Each round's training keys, the feature scale and the classes, from fedrun's own source
    in a process of its own (opening a source imports TensorFlow, which this parent never does)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_source_cohorts, config, rounds, k).result()


def _source_cohorts(config: RunConfig, rounds: int, k: int) -> tuple[list[list[str]], float | None, int]:
    from fedrun.loop.simulation import open_source
    from fedrun.selection.cohort import training_cohort

    source = open_source(config)
    keys = [training_cohort(source, config.workload.seed, r, k).keys for r in range(1, rounds + 1)]
    return keys, source.scale, source.num_classes


class PflRunner:
    """The parent's handle on one pfl runner (and, through it, on its worker processes)."""

    def __init__(self, python: Path, config: RunConfig, processes: int, scale: float | None, classes: int):
        w = config.workload
        self.processes = processes
        self._log = tempfile.TemporaryFile("w+")
        command = [
            str(python),
            "-P",  # not this folder on sys.path: its pfl.py would hide the pfl package
            str(RUNNER),
            f"--data={Path(config.data.source).expanduser().resolve()}",
            f"--epochs={w.epochs}",
            f"--batch-size={w.batch_size}",
            f"--shuffle-buffer={w.shuffle_buffer}",
            f"--client-lr={w.client_lr}",
            f"--server-lr={w.server_lr}",
            f"--classes={classes}",
            f"--processes={processes}",
            *([f"--scale={scale!r}"] if scale is not None else []),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
        )

    def __enter__(self) -> PflRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
            ready, _, _ = select.select([self.process.stdout], [], [], CALL_TIMEOUT_S)
            line = self.process.stdout.readline() if ready else None
        except OSError:
            line = ""
        if line is None:  # e.g. a worker died and the others wait in an all-reduce
            self.process.kill()
            raise FedrunError(
                f"the pfl runner ({self.processes} processes) did not answer {command['cmd']!r} in "
                f"{CALL_TIMEOUT_S:.0f} s: killed; its output:\n{self._output()}"
            )
        if not line:
            raise FedrunError(
                f"the pfl runner ({self.processes} processes) exited with code {self.process.poll()} "
                f"during {command['cmd']!r}; its output:\n{self._output()}"
            )
        reply = json.loads(line)
        if "error" in reply:
            raise FedrunError(f"the pfl runner failed during {command['cmd']!r}:\n{reply['error']}")
        return reply["ok"]

    def start(self, weights: list[np.ndarray]) -> dict[str, Any]:
        return self.call({"cmd": "start", "weights": [np.asarray(x).tolist() for x in weights]})

    def round(self, round_num: int, keys: list[str]) -> dict[str, Any]:
        """One timed round, with the CPU time of the runner's whole process tree over it."""
        cpu, wall = tree_cpu_seconds(self.process.pid), time.monotonic()
        record = self.call({"cmd": "round", "round": round_num, "keys": keys})
        record["cpu_s"] = tree_cpu_seconds(self.process.pid) - cpu
        record["wall_s"] = time.monotonic() - wall
        record["round"] = round_num
        return record

    def weights(self) -> list[np.ndarray]:
        return [np.asarray(x, np.float32) for x in self.call({"cmd": "weights"})["weights"]]

    def close(self) -> None:
        """Asks the runner to stop (it stops its workers); kills it if it does not."""
        with contextlib.suppress(OSError):
            self.process.stdin.write(json.dumps({"cmd": "close"}) + "\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()  # its workers die with it (PR_SET_PDEATHSIG)
            self.process.wait()
            print(f"fedrun bench: the pfl runner did not stop; killed\n{self._output()}", file=sys.stderr)
        self._log.close()

    def _output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-4000:]
