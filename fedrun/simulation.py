"""Assembles a run: data, algorithm, workers, coordinator; stops every worker on every exit path."""

import time

from tqdm import tqdm

from cluster import create_backend
from fedrun.config import RunConfig
from fedrun.coordinator import Coordinator
from fedrun.data import create_source
from fedrun.dispatch import Dispatcher
from fedrun.learning import build_algorithm
from fedrun.results import RoundRecord, RunDirectory
from fedrun.summary import round_line, summary_table
from fedrun.worker_session import WorkerSession


def simulate(config: RunConfig) -> str:
    """Runs the simulation described by `config`; returns the summary table."""
    started = time.monotonic()
    run_dir = RunDirectory(config.out)
    run_dir.write_config(config)
    run_dir.start_rounds()
    source = create_source(config.data, population=config.population, heldout=config.eval_clients)
    algorithm = build_algorithm(
        source, model=config.model, epochs=config.epochs, batch_size=config.batch_size,
        shuffle_buffer=config.shuffle_buffer, client_lr=config.client_lr, server_lr=config.server_lr)
    records: list[RoundRecord] = []
    with create_backend(config.backend, **_backend_options(config, run_dir)) as backend:
        sessions = [WorkerSession(w, config.rpc_timeout_s) for w in backend.start(config.workers)]
        # disable=None: tqdm shows the bar only on a terminal; logs and pipes get the round lines.
        progress = tqdm(total=config.rounds, unit="round", disable=None if config.progress else True, leave=False)

        def on_round(record: RoundRecord) -> None:
            records.append(record)
            progress.write(round_line(record))
            progress.update()

        try:
            dispatcher = Dispatcher(sessions, backend.is_alive)
            Coordinator(config, source, algorithm, dispatcher, run_dir, on_round).run()
        finally:
            progress.close()
            for session in sessions:
                session.close()
    return summary_table(records, time.monotonic() - started)


def _backend_options(config: RunConfig, run_dir: RunDirectory) -> dict:
    from cluster.local import LocalWorkerOptions
    return {"options": LocalWorkerOptions(
        max_concurrent_computation_calls=config.worker_max_concurrent_calls,
        ready_timeout_s=config.worker_start_timeout_s,
        log_dir=run_dir.path / "workers",
    )}
