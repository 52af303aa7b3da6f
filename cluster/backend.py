"""The contract every worker backend meets: start workers, give their gRPC targets, stop them.

The coordinator only ever dials a `Worker.target`; how the process behind it is started (a local
child process, a Ray actor, a machine someone else runs) stays behind this interface.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar

from cluster.errors import WorkerError

_Slot = TypeVar("_Slot")


@dataclasses.dataclass(frozen=True)
class Worker:
    """One TFF executor-service worker as the coordinator sees it."""

    worker_id: str  # stable slot name, e.g. "local-0"; kept when the worker is replaced
    target: str  # gRPC target to dial, e.g. "127.0.0.1:40123" or "unix:/path"


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a backend does beyond the contract, for callers that adapt to it."""

    # `replace` starts a new process (freeing what the old one held) rather than reconnecting to
    # a worker someone else runs: only then is replacing healthy workers worth anything.
    starts_workers: bool


@dataclasses.dataclass(frozen=True)
class Slowdown:
    """A worker slowed down for real, for straggler experiments (cluster.local.throttle)."""

    factor: float
    mechanism: str  # what slows it, e.g. "cgroup v1 cpu.cfs_quota_us at 0.25 CPUs"


class WorkerBackend(abc.ABC):
    """Starts, watches and stops the workers of one federated run."""

    capabilities = Capabilities(starts_workers=True)

    @abc.abstractmethod
    def start(self, num_workers: int) -> list[Worker]:
        """Starts workers and returns once all accept gRPC connections.

        Raises WorkerStartError within a bounded time otherwise, after stopping whatever it
        started.
        """

    @abc.abstractmethod
    def workers(self) -> list[Worker]:
        """The current worker of every slot, in slot order."""

    @abc.abstractmethod
    def is_alive(self, worker_id: str) -> bool:
        """Whether the worker in this slot is still running."""

    @abc.abstractmethod
    def replace(self, worker_id: str) -> Worker:
        """Stops the slot's worker if needed and starts a fresh one under the same worker_id."""

    def slowdowns(self) -> dict[str, Slowdown]:
        """The workers slowed down on purpose, by worker id; none unless the options ask."""
        return {}

    @abc.abstractmethod
    def stop(self) -> None:
        """Stops everything this backend started, in bounded time; safe to call again."""

    def __enter__(self) -> WorkerBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def slot_of(slots: Mapping[str, _Slot], worker_id: str) -> _Slot:
    """A backend's record of one worker, or a WorkerError naming the workers it has."""
    if worker_id not in slots:
        raise WorkerError(
            f"no worker {worker_id!r} in this backend; its workers are "
            f"{sorted(slots) or 'none (not started)'}"
        )
    return slots[worker_id]
