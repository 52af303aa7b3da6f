"""fedrun's Coordinator in this process over real worker processes, as `fedrun run` assembles it."""

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from cluster import LocalProcessBackend, WorkerBackend
from fedrun.bench.reference import reference_training, tff_local_context
from fedrun.config import RunConfig
from fedrun.data.source import ClientDataSource
from fedrun.learning.algorithm import FederatedAlgorithm
from fedrun.loop.buffered import coordinator_class
from fedrun.loop.run_dir import RunDirectory
from fedrun.loop.simulation import runtime_over
from fedrun.loop.steps import RoundSteps
from fedrun.runtime.dispatch import Dispatcher
from fedrun.runtime.execution import RoundRuntime
from fedrun.runtime.session import WorkerSession


def run_coordinator(
    config: RunConfig,
    source: ClientDataSource,
    algorithm: FederatedAlgorithm,
    out: Path,
    backend: WorkerBackend | None = None,
    replace: bool = True,
    steps: RoundSteps | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Final server state and the rounds.jsonl records of a run over `backend`'s started
    workers, or over `config.workers.count` local workers started (and stopped) here. Without
    `replace`, a failed worker's slot is dropped rather than refilled. `steps`: the loop's steps
    (default: those the configuration makes)."""
    run_dir = RunDirectory(out)
    run_dir.create()
    run_dir.start_fresh()
    with contextlib.ExitStack() as stack:
        if backend is None:
            backend = stack.enter_context(LocalProcessBackend())
            backend.start(config.workers.count)
        if replace:
            runtime = runtime_over(backend, algorithm, config)
        else:
            timeout = config.dispatch.rpc_timeout_s
            dispatcher = Dispatcher([WorkerSession(w, timeout) for w in backend.workers()], backend.is_alive)
            runtime = RoundRuntime(dispatcher, algorithm, config.num_shards, config.dispatch.recycle_every)
        try:
            state = coordinator_class(config)(config, source, runtime, run_dir, steps=steps).run()
        finally:
            runtime.close()
    return state, [record.to_json() for record in run_dir.rounds.read()]


def reference_run(
    config: RunConfig, source: ClientDataSource, algorithm: FederatedAlgorithm
) -> tuple[Any, list[dict[str, float]]]:
    """The same rounds in TFF's own single-process local context: final state, train metrics."""
    workload = config.workload
    with tff_local_context():
        return reference_training(
            algorithm,
            source,
            seed=workload.seed,
            rounds=workload.rounds,
            clients_per_round=workload.clients_per_round,
        )


def max_weight_difference(state: Any, other: Any) -> float:
    pairs = zip(state.global_model_weights.trainable, other.global_model_weights.trainable)
    return max(float(np.max(np.abs(a - b))) for a, b in pairs)
