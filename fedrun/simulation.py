"""Assembles a run: data, algorithm, workers, coordinator; stops every worker on every exit path."""

from cluster import create_backend
from fedrun.backends import backend_options
from fedrun.config import RunConfig
from fedrun.coordinator import Coordinator
from fedrun.data import SourceOptions, create_source
from fedrun.dispatch import Dispatcher
from fedrun.errors import FedrunError
from fedrun.learning import build_algorithm
from fedrun.observers import Observers, RunObserver
from fedrun.results import RunDirectory


def simulate(config: RunConfig, observers: list[RunObserver], resume: bool = False) -> None:
    """Runs the simulation described by `config` (continuing its checkpoint when `resume`),
    reporting to `observers`. Nothing in the output directory changes until the data, the
    algorithm and the workers are ready, so a bad option never costs earlier results."""
    run_dir = RunDirectory(config.out)
    source = create_source(SourceOptions(data=config.data, data_dir=config.data_dir, test_data=config.test_data,
                                         population=config.population, heldout=config.eval_clients))
    if config.clients_per_round > source.population:
        raise FedrunError(f"--data {config.data} has {source.population} training clients, fewer than "
                          f"--clients-per-round {config.clients_per_round}: lower it (or --eval-clients)")
    events = Observers(observers)
    with create_backend(config.backend, **backend_options(config, run_dir.path)) as backend:
        dispatcher = Dispatcher.start(backend, config.workers, config.rpc_timeout_s)
        try:
            algorithm = build_algorithm(
                source, model=config.model, epochs=config.epochs, batch_size=config.batch_size,
                shuffle_buffer=config.shuffle_buffer, client_lr=config.client_lr, server_lr=config.server_lr,
                client_optimizer=config.client_optimizer, client_momentum=config.client_momentum,
                server_optimizer=config.server_optimizer, server_momentum=config.server_momentum,
                data_placement=config.data_placement, client_loop=config.client_loop)
            if not resume:
                run_dir.start_fresh()
            run_dir.write_config(config)
            events.on_start(config, backend.workers())
            try:
                Coordinator(config, source, algorithm, dispatcher, run_dir, events.on_round,
                            recycle_workers=backend.starts_workers).run(resume)
            finally:
                events.on_end()
        finally:
            dispatcher.close(wait=False)
