"""fedrun's Coordinator in this process over real worker processes, as `fedrun run` uses it."""

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from cluster import LocalProcessBackend, WorkerBackend
from fedrun.config import RunConfig
from fedrun.coordinator import Coordinator
from fedrun.data.source import ClientDataSource
from fedrun.dispatch import Dispatcher
from fedrun.learning import FederatedAlgorithm
from fedrun.reference import reference_training, tff_local_context
from fedrun.results import RunDirectory, read_rounds
from fedrun.worker_session import WorkerSession


def run_coordinator(config: RunConfig, source: ClientDataSource, algorithm: FederatedAlgorithm,
                    out: Path, backend: WorkerBackend | None = None,
                    replace: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """Final server state and the rounds.jsonl records of a run over `backend`'s started
    workers, or over `config.workers` local workers started (and stopped) here. Without
    `replace`, a failed worker's slot is dropped rather than refilled."""
    run_dir = RunDirectory(out)
    run_dir.start_fresh()
    with contextlib.ExitStack() as stack:
        if backend is None:
            backend = stack.enter_context(LocalProcessBackend())
            backend.start(config.workers)
        dispatcher = (Dispatcher.for_backend(backend, config.rpc_timeout_s) if replace else Dispatcher(
            [WorkerSession(w, config.rpc_timeout_s) for w in backend.workers()], backend.is_alive))
        try:
            state = Coordinator(config, source, algorithm, dispatcher, run_dir).run()
        finally:
            dispatcher.close()
    return state, read_rounds(run_dir.rounds_file)


def reference_run(config: RunConfig, source: ClientDataSource,
                  algorithm: FederatedAlgorithm) -> tuple[Any, list[dict[str, float]]]:
    """The same rounds in TFF's own single-process local context: final state, train metrics."""
    with tff_local_context():
        return reference_training(algorithm, source, seed=config.seed, rounds=config.rounds,
                                  clients_per_round=config.clients_per_round)


def max_weight_difference(state: Any, other: Any) -> float:
    pairs = zip(state.global_model_weights.trainable, other.global_model_weights.trainable)
    return max(float(np.max(np.abs(a - b))) for a, b in pairs)
