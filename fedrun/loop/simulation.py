"""Assembles a run: data, algorithm, workers, runtime, coordinator; stops every worker on every
exit path. `fedrun run`, the benchmark and the tests all assemble runs with these functions."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster import WorkerBackend, create_backend
from fedrun.config import RunConfig
from fedrun.data.registry import SourceOptions, create_source
from fedrun.errors import FedrunError
from fedrun.loop.buffered import coordinator_class
from fedrun.loop.run_dir import WORKERS, RunDirectory
from fedrun.observe.observers import Observers, RunObserver

_STATUS = logging.getLogger("fedrun.status")  # what a long wait is for, shown as it begins

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource
    from fedrun.learning.algorithm import FederatedAlgorithm
    from fedrun.runtime.execution import RoundRuntime


def open_source(config: RunConfig) -> ClientDataSource:
    """The run's clients; a FedrunError if they are too few for a round."""
    data = config.data
    source = create_source(
        SourceOptions(
            data=data.source,
            data_dir=data.data_dir,
            test_data=data.test_data,
            population=data.population,
            heldout=config.eval.clients,
            speed_data_skew=config.system.speed_data_skew,
            seed=config.workload.seed,
            cache_dir=data.cache_dir,
            feature_scale=data.feature_scale,
            partition=data.partition,
        )
    )
    check_population(config, source)
    return source


def check_population(config: RunConfig, source: ClientDataSource) -> None:
    """A FedrunError if the source has too few clients for a round (or for the clients in flight)."""
    workload = config.workload
    if config.clients_selected > source.population:
        raise FedrunError(
            f"--data {config.data.source} has {source.population} training clients, fewer than the "
            f"{config.clients_selected} a round selects (--clients-per-round {workload.clients_per_round}"
            f"{', --over-selection' if config.clients_selected > workload.clients_per_round else ''}): "
            f"lower it (or --eval-clients)"
        )
    concurrency = config.aggregation.max_concurrency
    if config.aggregation.buffered and concurrency > source.population:
        raise FedrunError(
            f"--data {config.data.source} has {source.population} training clients, fewer than the "
            f"{concurrency} buffered-async keeps in flight: lower --max-concurrency (or --eval-clients)"
        )


@contextlib.contextmanager
def started_workers(config: RunConfig, log_dir: Path | None) -> Iterator[WorkerBackend]:
    """The configured backend with its workers started; stopped however the block ends."""
    with create_backend(config.cluster, log_dir) as backend:
        backend.start(config.workers.count)
        yield backend


def runtime_over(
    backend: WorkerBackend,
    algorithm: FederatedAlgorithm,
    config: RunConfig,
    should_stop: Callable[[], None] = lambda: None,
) -> RoundRuntime:
    from fedrun.runtime.execution import RoundRuntime  # loads TensorFlow

    dispatch = config.dispatch
    return RoundRuntime.over(
        backend,
        algorithm,
        config.num_shards,
        dispatch.rpc_timeout_s,
        dispatch.recycle_every,
        should_stop,
        speculation=dispatch.speculation_threshold if dispatch.speculate else None,
        sizing=dispatch.shard_sizing,
    )


def recorded(config: RunConfig, source: ClientDataSource) -> RunConfig:
    """The configuration as config.toml keeps it: with the feature scale a file source chose."""
    scale = getattr(source, "scale", "auto")
    if config.data.feature_scale != "auto" or scale == "auto":
        return config
    return config.replace(data={"feature_scale": "none" if scale is None else repr(scale)})


class SharedPool:
    """Started workers, data sources and built algorithms that several runs share (`fedrun
    sweep`): runs that differ only in their policies reuse all three; building an algorithm
    (tracing TFF computations) takes seconds, starting workers more."""

    def __init__(self, backend: WorkerBackend):
        self.backend = backend
        self._sources: dict[Any, ClientDataSource] = {}
        self._algorithms: dict[Any, FederatedAlgorithm] = {}
        self.builds = 0  # algorithms built (each traced TFF's computations)
        self.build_s = 0.0

    def source(self, config: RunConfig) -> ClientDataSource:
        key = (config.data, config.eval.clients, config.system.speed_data_skew, config.workload.seed)
        if key not in self._sources:
            self._sources[key] = open_source(config)
        check_population(config, self._sources[key])
        return self._sources[key]

    def algorithm(self, config: RunConfig, source: ClientDataSource) -> FederatedAlgorithm:
        from fedrun.learning.algorithm import algorithm_for  # loads TensorFlow

        # What the computations depend on: not the rounds, the clients per round or the sampling seed.
        workload = dataclasses.replace(config.workload, rounds=1, clients_per_round=1, seed=0)
        key = (id(source), workload, config.data, config.observe.client_timing, config.aggregation.buffered)
        if key not in self._algorithms:
            started = time.monotonic()
            self._algorithms[key] = algorithm_for(config, source)
            self.builds += 1
            self.build_s += time.monotonic() - started
        return self._algorithms[key]


def simulate(
    config: RunConfig,
    observers: list[RunObserver],
    resume: bool = False,
    should_stop: Callable[[], None] = lambda: None,
    pool: SharedPool | None = None,
) -> None:
    """Runs the simulation described by `config` (continuing its checkpoint when `resume`),
    reporting to `observers`. Nothing in the output directory changes until the data, the
    algorithm and the workers are ready, so a bad option never costs earlier results, and a run
    that fails before its first round leaves no empty folder. `should_stop` is called at every
    safe point (start-up, the round loop, waits on workers) and raises to stop there; the workers
    are stopped on the way out. With a `pool`, the run uses its workers (left running) and
    reuses the sources and algorithms it built."""
    from fedrun.learning.algorithm import algorithm_for  # loads TensorFlow

    run_dir = RunDirectory(config.output.dir)
    source = pool.source(config) if pool else open_source(config)
    should_stop()
    made = run_dir.create()
    try:
        workers = config.workers
        if pool is None:
            _STATUS.info("starting %d %s workers", workers.count, workers.backend)
        started = time.monotonic()
        with (
            contextlib.nullcontext(pool.backend)
            if pool
            else started_workers(config, run_dir.path / WORKERS) as backend
        ):
            should_stop()
            if pool is None:
                _STATUS.info(
                    "workers ready in %.1f s; building the round's computations (TensorFlow)",
                    time.monotonic() - started,
                )
            algorithm = pool.algorithm(config, source) if pool else algorithm_for(config, source)
            should_stop()
            runtime = runtime_over(backend, algorithm, config, should_stop)
            try:
                if not resume:
                    run_dir.start_fresh()
                    run_dir.write_data_description(source)
                run_dir.write_config(recorded(config, source))
                events = Observers(observers)
                events.on_start(config, backend.workers())
                try:
                    coordinator = coordinator_class(config)(
                        config, source, runtime, run_dir, events.on_round, should_stop=should_stop
                    )
                    coordinator.run(resume)
                finally:
                    events.on_end()
            finally:
                runtime.close()
    except BaseException:
        if made:  # a run that failed early leaves no empty folder
            run_dir.remove_if_empty()
        raise
