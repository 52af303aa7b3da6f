"""How a local worker_binary process is started: its flags, threads, isolation and timeouts.

Free of gRPC and of the backend itself, so a configuration is checked (and `--help` lists the
choices) without starting anything. The Ray actor and `fedrun worker` start the binary the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cluster.local.binary import find_worker_binary

if TYPE_CHECKING:
    from cluster.settings import ClusterSettings, WorkerSettings


ISOLATIONS = ("auto", "netns", "none")
SLOW_MECHANISMS = ("auto", "cgroup", "duty-cycle")  # cluster.local.throttle
_MAX_GRPC_MESSAGE_MB = 2047  # gRPC message sizes are 32-bit byte counts


@dataclasses.dataclass(frozen=True)
class LocalWorkerOptions:
    """How local workers are started; the defaults are the fastest measured on 2 cores."""

    binary: Path | None = None  # None: the worker_binary shipped with tensorflow_federated
    max_concurrent_computation_calls: int = 2  # -1: no limit
    # TensorFlow threads of the binary (0: TensorFlow's default, one per core). The defaults, one
    # thread inside an op and two ops at a time (a client's input pipeline beside its training
    # step), were the fastest measured with one worker per core on 2 cores.
    intra_op_threads: int = 1
    inter_op_threads: int = 2
    ready_timeout_s: float = 60.0
    grpc_max_message_mb: int = 2000
    log_dir: Path | None = None  # None: a private directory removed at stop()
    # "netns": each worker in its own network namespace, reached through a 0600 Unix socket;
    # "none": the binary's port is open on every interface; "auto": netns where `unshare` works.
    isolation: Literal["auto", "netns", "none"] = "auto"
    timeout_name: str = "ready_timeout_s"  # how the user sets ready_timeout_s, for messages
    # Workers slowed down for real (cluster.local.throttle), by id, with the factor; how; and the
    # CPUs each would have unslowed, which a cgroup's cap divides (0: this machine's CPUs shared
    # by the workers this backend starts).
    slow: Mapping[str, float] = dataclasses.field(default_factory=dict)
    slow_mechanism: str = "auto"
    cpu_share: float = 0.0

    def __post_init__(self) -> None:
        if self.slow_mechanism not in SLOW_MECHANISMS:
            raise ValueError(
                f"slow_mechanism must be one of {', '.join(SLOW_MECHANISMS)}; got {self.slow_mechanism!r}"
            )
        if any(not factor > 1 for factor in self.slow.values()):
            raise ValueError(f"slow-down factors must be above 1; got {dict(self.slow)}")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}; got {self.isolation!r}")
        calls = self.max_concurrent_computation_calls
        if calls < 1 and calls != -1:
            raise ValueError(
                f"max_concurrent_computation_calls must be a positive integer, or -1 for no "
                f"limit; got {calls}"
            )
        if min(self.intra_op_threads, self.inter_op_threads) < 0:
            raise ValueError(
                f"intra_op_threads and inter_op_threads must be 0 (TensorFlow's default) or a "
                f"thread count; got {self.intra_op_threads} and {self.inter_op_threads}"
            )
        if not self.ready_timeout_s > 0:
            raise ValueError(f"ready_timeout_s must be positive; got {self.ready_timeout_s}")
        if not 1 <= self.grpc_max_message_mb <= _MAX_GRPC_MESSAGE_MB:
            raise ValueError(
                f"grpc_max_message_mb must be between 1 and {_MAX_GRPC_MESSAGE_MB}; "
                f"got {self.grpc_max_message_mb}"
            )

    @property
    def within(self) -> str:
        """ "within <the timeout, named as the user sets it>", for messages."""
        return f"within {self.timeout_name}={self.ready_timeout_s:g} s"

    def worker_command(self, binary: Path, port: int) -> list[str]:
        """The worker_binary command line; port 0 lets the kernel pick a free port."""
        return [
            str(binary),
            f"--port={port}",
            f"--max_concurrent_computation_calls={self.max_concurrent_computation_calls}",
            f"--grpc_max_message_length_megabytes={self.grpc_max_message_mb}",
        ]

    def worker_environment(self) -> dict[str, str]:
        """This process's environment plus the thread limits the binary honours."""
        env = dict(os.environ)
        for variable, threads in [
            ("TF_NUM_INTRAOP_THREADS", self.intra_op_threads),
            ("OMP_NUM_THREADS", self.intra_op_threads),
            ("TF_NUM_INTEROP_THREADS", self.inter_op_threads),
        ]:
            if threads:
                env[variable] = str(threads)
        return env

    def preflight(self) -> None:
        """Checks, without starting anything, that this machine has the binary to run."""
        find_worker_binary(self.binary)


def from_settings(settings: ClusterSettings, log_dir: Path | None) -> LocalWorkerOptions:
    """The local backend's options; worker logs go to `log_dir` (None: a private folder)."""
    workers = settings.workers
    return dataclasses.replace(
        process_options(workers, log_dir, workers.isolation), slow=workers.check_slow_ids("local")
    )


def process_options(workers: WorkerSettings, log_dir: Path | None, isolation: str) -> LocalWorkerOptions:
    """How each worker_binary process starts, wherever it runs (a local child, a Ray actor)."""
    from cluster.settings import flag_of  # here: the settings module imports this one

    return LocalWorkerOptions(
        binary=Path(workers.binary) if workers.binary else None,
        max_concurrent_computation_calls=workers.max_concurrent_calls,
        intra_op_threads=workers.intra_op_threads,
        inter_op_threads=workers.inter_op_threads,
        ready_timeout_s=workers.start_timeout_s,
        timeout_name=flag_of(type(workers), "start_timeout_s"),
        log_dir=log_dir,
        isolation=isolation,  # type: ignore[arg-type]  # checked in __post_init__
        slow_mechanism=workers.slow_mechanism,
    )
