"""fedrun's Coordinator in this process over real local worker processes, as `fedrun run` uses it."""

from pathlib import Path
from typing import Any

import numpy as np

from cluster import LocalProcessBackend
from fedrun.config import RunConfig
from fedrun.coordinator import Coordinator
from fedrun.data.source import ClientDataSource
from fedrun.dispatch import Dispatcher
from fedrun.learning import FederatedAlgorithm, build_algorithm
from fedrun.reference import reference_training, tff_local_context
from fedrun.results import RunDirectory, read_rounds


def algorithm_for(config: RunConfig, source: ClientDataSource) -> FederatedAlgorithm:
    return build_algorithm(
        source, model=config.model, epochs=config.epochs, batch_size=config.batch_size,
        shuffle_buffer=config.shuffle_buffer, client_lr=config.client_lr, server_lr=config.server_lr,
        client_optimizer=config.client_optimizer, client_momentum=config.client_momentum,
        server_optimizer=config.server_optimizer, server_momentum=config.server_momentum,
        data_placement=config.data_placement, client_loop=config.client_loop)


def run_coordinator(config: RunConfig, source: ClientDataSource, algorithm: FederatedAlgorithm,
                    out: Path) -> tuple[Any, list[dict[str, Any]]]:
    """Final server state and the rounds.jsonl records of a run on `config.workers` workers."""
    run_dir = RunDirectory(out)
    run_dir.start_fresh()
    with LocalProcessBackend() as backend:
        dispatcher = Dispatcher.start(backend, config.workers, config.rpc_timeout_s)
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
