"""Assembles a run: data, algorithm, workers, coordinator; stops every worker on every exit path."""

from cluster import create_backend
from fedrun.backends import backend_options
from fedrun.config import RunConfig
from fedrun.coordinator import Coordinator
from fedrun.data import create_source
from fedrun.dispatch import Dispatcher
from fedrun.learning import build_algorithm
from fedrun.observers import Observers, RunObserver
from fedrun.results import RunDirectory
from fedrun.worker_session import WorkerSession


def simulate(config: RunConfig, observers: list[RunObserver]) -> None:
    """Runs the simulation described by `config`, reporting to `observers`."""
    run_dir = RunDirectory(config.out)
    run_dir.write_config(config)
    run_dir.start_rounds()
    source = create_source(config.data, population=config.population, heldout=config.eval_clients)
    algorithm = build_algorithm(
        source, model=config.model, epochs=config.epochs, batch_size=config.batch_size,
        shuffle_buffer=config.shuffle_buffer, client_lr=config.client_lr, server_lr=config.server_lr)
    events = Observers(observers)
    with create_backend(config.backend, **backend_options(config, run_dir.path)) as backend:
        sessions = [WorkerSession(w, config.rpc_timeout_s) for w in backend.start(config.workers)]
        events.on_start(config, backend.workers())
        try:
            dispatcher = Dispatcher(sessions, backend.is_alive)
            Coordinator(config, source, algorithm, dispatcher, run_dir, events.on_round).run()
        finally:
            events.on_end()
            for session in sessions:
                session.close()
