"""Assembles a run: data, algorithm, workers, coordinator; stops every worker on every exit path."""

from cluster import create_backend
from fedrun.backends import backend_options
from fedrun.config import RunConfig
from fedrun.coordinator import Coordinator
from fedrun.data import SourceOptions, create_source
from fedrun.dispatch import Dispatcher
from fedrun.errors import FedrunError
from fedrun.learning import algorithm_for
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
        backend.start(config.workers)
        dispatcher = Dispatcher.for_backend(backend, config.rpc_timeout_s)
        try:
            algorithm = algorithm_for(config, source)
            if not resume:
                run_dir.start_fresh()
            run_dir.write_config(config)
            events.on_start(config, backend.workers())
            try:
                Coordinator(config, source, algorithm, dispatcher, run_dir, events.on_round).run(resume)
            finally:
                events.on_end()
        finally:
            dispatcher.close(wait=False)
