"""The systems `fedrun bench` compares, each in a process of its own, and the parent's
handle on those processes.

A child process builds one system (fedrun on local workers, TFF's single-process local context,
or the plain TensorFlow loop of fedrun.tf_loop), then runs the parent's commands, timing each
itself. TensorFlow is imported only in the children, so each child's process tree holds exactly
one system: its CPU time and memory are that system's, workers included.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fedrun.bench.process_tree import PeakMemorySampler, tree_cpu_seconds
from fedrun.config import RunConfig
from fedrun.errors import FedrunError
from fedrun.stopping import STOP


class _TffSystem:
    """A system that runs fedrun's TFF learning process; `start` enters what `close` leaves."""

    def __init__(self, workload: RunConfig):
        self.workload = workload
        from fedrun.learning.algorithm import algorithm_for
        from fedrun.loop.simulation import open_source

        self.source = open_source(workload)
        self.algorithm = algorithm_for(workload, self.source)
        self._stack = contextlib.ExitStack()

    def weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.state.global_model_weights.trainable]

    def close(self) -> None:
        self._stack.close()


class _Fedrun(_TffSystem):
    """fedrun itself: local worker processes, driven through the round's public steps (select,
    plan, execute) as the coordinator drives them."""

    def start(self) -> None:
        from fedrun.loop.simulation import runtime_over, started_workers
        from fedrun.selection.policy import WaitForAll

        log_dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="fedrun-bench-")))
        backend = self._stack.enter_context(started_workers(self.workload, log_dir))
        self.runtime = runtime_over(backend, self.algorithm, self.workload)
        self._stack.callback(self.runtime.close)
        self.policy = WaitForAll()
        self.state = self.runtime.initial_state()

    def train_round(self, round_num: int, clients: int) -> dict[str, Any]:
        from fedrun.selection.selector import UniformSelector

        cohort = UniformSelector(self.source, self.workload.workload.seed, clients).select(round_num, 0.0)
        outcome = self.runtime.train(round_num, self.state, self.policy.plan(round_num, cohort, 0.0).training)
        self.state = outcome.state
        return _round_result(outcome, cohort, clients)


class _FedrunBuffered(_Fedrun):
    """fedrun's buffered-async loop (FedBuff) on the same kind of pool: a round is one server
    update of the configured buffer size, planned and executed as BufferedCoordinator does."""

    def start(self) -> None:
        from fedrun.loop.buffered import BufferedCoordinator
        from fedrun.loop.run_dir import RunDirectory

        super().start()
        scratch = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="fedrun-bench-")))
        self.loop = BufferedCoordinator(self.workload, self.source, self.runtime, RunDirectory(scratch))
        self.loop.state = self.state

    def train_round(self, round_num: int, clients: int) -> dict[str, Any]:
        del clients  # the buffer size decides
        plan = self.loop.plan(round_num)
        outcome = self.loop.execute(round_num, plan)
        self.loop.keep_version(plan.update.version, outcome.state)
        self.loop.state = self.state = outcome.state
        return {
            **_round_result(outcome, plan.cohort, len(plan.cohort.clients)),
            "staleness_max": max(plan.update.staleness(f) for f in plan.update.results),
        }


def _round_result(outcome: Any, cohort: Any, clients: int) -> dict[str, Any]:
    """What a fedrun round command returns: metrics, traffic, shards, stragglers' records."""
    return {
        **outcome.metrics,
        "clients": clients,
        "bytes_to_workers": outcome.traffic.sent,
        "coordinator_latency_s": outcome.wall_s,
        "copies": outcome.backups,
        "copy_wins": sum(run.timing.backup for run in outcome.shards),
        "slowed": {worker: slowdown.mechanism for worker, slowdown in outcome.slowed.items()},
        "shards": [
            {
                "worker": run.timing.worker,
                "examples": int(sum(cohort.sizes[p] for p in run.shard.positions)),
                "start": run.timing.start - outcome.start,
                "end": run.timing.end - outcome.start,
            }
            for run in outcome.shards
        ],
    }


class _TffLocal(_TffSystem):
    """TFF 0.87's ordinary single-process local context running TFF's own FedAvg, on datasets
    built on its worker from client keys, as fedrun builds them."""

    tff_fed_avg = True

    def start(self) -> None:
        from fedrun.bench.reference import tff_local_context

        self._stack.enter_context(tff_local_context())
        self.state = self.algorithm.training.initialize()

    def train_round(self, round_num: int, clients: int) -> dict[str, Any]:
        from fedrun.learning.algorithm import train_metrics
        from fedrun.selection.cohort import training_cohort

        cohort = training_cohort(self.source, self.workload.workload.seed, round_num, clients)
        output = self.algorithm.training.next(self.state, self._client_data(cohort.keys))
        self.state = output.state
        return {**train_metrics(output.metrics), "clients": clients}

    def _client_data(self, keys: list[str]) -> list:
        return self.algorithm.train_data(keys)


class _TffTutorial(_TffLocal):
    """The same context and FedAvg given the round's datasets as the seed tutorial gives them:
    built in Python from each client's examples, sent to the worker as tensors."""

    def __init__(self, workload: RunConfig):
        super().__init__(workload.replace(data={"placement": "coordinator"}))
        from fedrun.data.preprocessing import Preprocessing

        self.prep = Preprocessing.of(self.workload.workload)

    def _client_data(self, keys: list[str]) -> list:
        from fedrun.bench.reference import tutorial_datasets

        return tutorial_datasets(self.source, self.prep, keys)


class _ClientCosts(_TffSystem):
    """The probes of fedrun.bench.client_costs on one local worker: each runs a round's clients
    in one call, and the call is timed here."""

    def start(self) -> None:
        from fedrun.bench.client_costs import build_probes
        from fedrun.learning.algorithm import algorithm_for
        from fedrun.loop.simulation import started_workers
        from fedrun.runtime.session import WorkerSession

        one_worker = self.workload.replace(workers={"count": 1})
        backend = self._stack.enter_context(started_workers(one_worker, None))
        self.session = WorkerSession(backend.workers()[0], self.workload.dispatch.rpc_timeout_s)
        self._stack.callback(self.session.close)
        others = {
            "train_one_more_epoch": self.workload.replace(
                workload={"epochs": self.workload.workload.epochs + 1}
            ),
            "train_untimed": self.workload.replace(observe={"client_timing": False}),
        }
        algorithms = {"train": self.algorithm} | {
            name: algorithm_for(config, self.source) for name, config in others.items()
        }
        self.probes = build_probes(
            self.source,
            self.workload,
            {name: algorithm.train_form for name, algorithm in algorithms.items()},
            {
                name: self.session.submit(algorithm.training.initialize).result().value
                for name, algorithm in algorithms.items()
            },
        )

    def probe(self, name: str, round_num: int, clients: int) -> dict[str, Any]:
        from fedrun.selection.cohort import training_cohort

        keys = training_cohort(self.source, self.workload.workload.seed, round_num, clients).keys
        argument = self.probes.arguments[name](keys)
        start = time.monotonic()
        self.session.submit(self.probes.computations[name], argument).result()
        return {"latency_s": time.monotonic() - start, "clients": clients}


class _TfLoop:
    """The same FedAvg as a plain TensorFlow loop in this one process (fedrun.tf_loop)."""

    def __init__(self, workload: RunConfig):
        from fedrun.bench.tf_loop import TfLoopFedAvg
        from fedrun.data.preprocessing import (
            Preprocessing,
            eval_dataset_computation,
            train_dataset_computation,
        )
        from fedrun.learning.models import ModelInit, ModelSpec, create_model_fn
        from fedrun.loop.simulation import open_source

        self.workload = workload
        self.source = open_source(workload)
        w = workload.workload
        prep = Preprocessing.of(w)
        train_data = train_dataset_computation(self.source, prep)
        # As fedrun.learning builds it, so that the three systems train the same model.
        spec = ModelSpec(
            train_data.type_signature.result.element,
            tuple(self.source.element_spec[0].shape),
            self.source.num_classes,
        )
        self.loop = TfLoopFedAvg(
            create_model_fn(w.model, spec, ModelInit(w.model_init, w.seed)),
            train_data,
            eval_dataset_computation(self.source, prep),
            client_lr=w.client_lr,
            server_lr=w.server_lr,
        )

    def start(self) -> None:
        self._weights = self.loop.initial_weights

    def train_round(self, round_num: int, clients: int) -> dict[str, Any]:
        from fedrun.selection.cohort import training_cohort

        cohort = training_cohort(self.source, self.workload.workload.seed, round_num, clients)
        result = self.loop.train_round(self._weights, cohort.keys)
        self._weights = result.weights
        return {**result.metrics, "clients": clients}

    def weights(self) -> list[np.ndarray]:
        return self._weights

    def evaluate(self, weights: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
        """Each model's loss and accuracy on the held-out clients' test examples."""
        from fedrun.selection.cohort import evaluation_cohort

        keys = evaluation_cohort(self.source, self.source.heldout_clients()).keys
        return {name: self.loop.evaluate(w, keys) for name, w in weights.items()}

    def close(self) -> None:
        pass


_KINDS: dict[str, Callable[[RunConfig], Any]] = {
    "fedrun": _Fedrun,
    "fedrun_buffered": _FedrunBuffered,
    "tff_local": _TffLocal,
    "tff_tutorial": _TffTutorial,
    "tf_loop": _TfLoop,
    "client_costs": _ClientCosts,
}


def _serve(conn: multiprocessing.connection.Connection, kind: str, workload: RunConfig) -> None:
    """A child's loop: build the system, then run its commands until told to close (or until the
    parent is gone: the pipe then ends). Every command is timed here, inside the child."""
    # Ctrl-C is the parent's, which then closes us in order. A handler, not SIG_IGN: an ignored
    # signal stays ignored in processes we start, and TFF stops its local worker with SIGINT.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    system = None
    try:
        while True:
            try:
                command, args = conn.recv()
            except EOFError:
                return
            if command == "close":
                return
            try:
                start = time.monotonic()
                if command == "build":
                    import tensorflow_federated  # noqa: F401  (timed apart from the build)

                    imported = time.monotonic()
                    system = _KINDS[kind](workload)
                    reply = {"import_s": imported - start, "build_s": time.monotonic() - imported}
                elif command == "start":
                    system.start()
                    reply = {"start_s": time.monotonic() - start}
                elif command == "round":
                    result = system.train_round(*args)
                    reply = {**result, "latency_s": time.monotonic() - start}
                else:
                    reply = getattr(system, command)(*args)
            except Exception:
                conn.send(("error", traceback.format_exc()))
            else:
                conn.send(("ok", reply))
    finally:
        if system is not None:
            system.close()
        conn.close()


class SystemProcess:
    """The parent's handle on one system's process."""

    def __init__(self, name: str, kind: str, workload: RunConfig):
        self.name = name
        context = multiprocessing.get_context("spawn")  # no forked copy of the parent's threads
        self._conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child_conn, kind, workload), name=f"fedrun-bench-{name}", daemon=True
        )
        self.process.start()
        child_conn.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, command: str, *args: Any) -> Any:
        self._conn.send((command, args))
        try:
            status, value = self._conn.recv()
        except (EOFError, ConnectionResetError):
            raise FedrunError(
                f"bench system {self.name} exited with code {self.process.exitcode} "
                f"during {command!r}; rerun with --debug and check its output"
            ) from None
        if status == "error":
            raise FedrunError(f"bench system {self.name} failed during {command!r}:\n{value}")
        return value

    def round(self, round_num: int, clients: int) -> dict[str, Any]:
        """One timed round; adds the CPU time of the whole process tree over the round."""
        cpu, wall = tree_cpu_seconds(self.pid), time.monotonic()
        record = self.call("round", round_num, clients)
        record["cpu_s"] = tree_cpu_seconds(self.pid) - cpu
        record["wall_s"] = time.monotonic() - wall
        record["round"] = round_num
        return record

    def close(self) -> None:
        """Asks the child to stop its system; whatever it leaves running is killed and reported."""
        try:
            started = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        with contextlib.suppress(OSError):
            self._conn.send(("close", ()))
        # The child stops its workers on the way out; a stop request leaves it less time.
        self.process.join(timeout=2 if STOP.requested else 60)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
        self._conn.close()
        left = [p for p in started if p.is_running()]
        for process in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        if left or self.process.exitcode != 0:
            print(
                f"fedrun bench: system {self.name} exited with code {self.process.exitcode} and left "
                f"{len(left)} processes running (now killed)",
                file=sys.stderr,
            )


@contextlib.contextmanager
def system_processes(
    specs: dict[str, tuple[str, RunConfig]], sampler: PeakMemorySampler
) -> Iterator[dict[str, SystemProcess]]:
    children: dict[str, SystemProcess] = {}
    try:
        for name, (kind, workload) in specs.items():
            children[name] = SystemProcess(name, kind, workload)
            sampler.watch(name, children[name].pid)
        yield children
    finally:
        for child in children.values():
            child.close()


def build_and_start(children: dict[str, SystemProcess]) -> dict[str, dict[str, float]]:
    """Builds, then starts, each system alone (one at a time), so set-up times do not overlap."""
    setup = {name: child.call("build") for name, child in children.items()}
    for name, child in children.items():
        setup[name].update(child.call("start"))
    return setup
