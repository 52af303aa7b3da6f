"""Observers see a run's progress without the coordinator knowing who they are: the terminal,
Prometheus, TensorBoard. Each gets every event; none may change the run."""

from typing import Protocol

from cluster import Worker
from fedrun.config import RunConfig
from fedrun.loop.records import RoundRecord


class RunObserver(Protocol):
    def on_start(self, config: RunConfig, workers: list[Worker]) -> None: ...

    def on_round(self, record: RoundRecord) -> None: ...

    def on_end(self) -> None: ...


class Observers:
    """Fans each event out to every observer."""

    def __init__(self, observers: list[RunObserver]):
        self._observers = observers

    def on_start(self, config: RunConfig, workers: list[Worker]) -> None:
        for o in self._observers:
            o.on_start(config, workers)

    def on_round(self, record: RoundRecord) -> None:
        for o in self._observers:
            o.on_round(record)

    def on_end(self) -> None:
        for o in self._observers:
            o.on_end()
