"""The run configuration's worker sections, `[workers]` and `[ray]`, as a user sets them.

Each field carries its documentation (help, unit, allowed values, command-line flag) in its
metadata, so fedrun's `--help` and TOML reader are generated from it. What a value may be is
decided by the backend that uses it: `cluster.registry.backend_options` has the chosen backend
build (and so check) its own options from these sections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from cluster.local.options import ISOLATIONS, SLOW_MECHANISMS
from cluster.ray.options import PLACEMENT_STRATEGIES


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    unit: str | None = None,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    **extra: Any,
) -> Any:
    """A configuration field: its default and the metadata its flag, TOML key and --help use.

    `flag` is the command-line name without dashes (default: the field's name); `choices` may be
    a function, for lists that are looked up only when asked for.
    """
    metadata = {"help": help, "flag": flag, "unit": unit, "choices": choices, **extra}
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(section: type, name: str) -> str:
    """A setting's command-line flag, as messages name it for the user to change."""
    field = next(f for f in dataclasses.fields(section) if f.name == name)
    return "--" + (field.metadata.get("flag") or name.replace("_", "-"))


def _backend_names() -> tuple[str, ...]:
    from cluster.registry import BACKENDS

    return tuple(BACKENDS)


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """[workers]: which workers run the rounds and how their processes are started."""

    backend: str = setting(
        "local",
        "where the workers run: local child processes, Ray actors, or addresses of workers "
        "someone else runs (static)",
        choices=_backend_names,
    )
    count: int = setting(2, "number of workers", flag="workers")
    binary: str = setting(
        "",
        "TFF's worker_binary to run; empty: the one shipped with tensorflow_federated",
        flag="worker-binary",
        unit="path",
    )
    max_concurrent_calls: int = setting(
        2,
        "computations each worker runs at once (-1: no limit)",
        flag="worker-max-concurrent-calls",
    )
    intra_op_threads: int = setting(
        1,
        "TensorFlow threads inside one op, per worker (0: one per core); 1 was fastest with one "
        "worker per core",
        flag="worker-intra-op-threads",
    )
    inter_op_threads: int = setting(
        2,
        "TensorFlow ops run at once, per worker (0: one per core); 2 lets a client's input "
        "pipeline run beside its training step",
        flag="worker-inter-op-threads",
    )
    start_timeout_s: float = setting(
        60.0,
        "how long starting (or reaching) the workers may take before the run stops with an error",
        flag="worker-start-timeout-s",
        unit="s",
    )
    isolation: str = setting(
        "auto",
        "local workers: netns runs each in a private network namespace behind a Unix socket; "
        "none leaves its port open on every interface; auto uses netns where possible",
        flag="worker-isolation",
        choices=ISOLATIONS,
    )
    addresses: str = setting(
        "",
        "static backend: the workers' gRPC targets, comma-separated host:port, [ipv6]:port or unix:/path",
        flag="worker-addresses",
    )
    allow_remote: bool = setting(
        False,
        "static backend: accept worker addresses that are not on this machine (their port runs "
        "any TensorFlow graph for whoever reaches it)",
        flag="allow-remote-workers",
    )
    slow: str = setting(
        "",
        "slow these workers down for real, ID:FACTOR,... (local-1:4 runs local-1 at a quarter of "
        "its speed); for straggler experiments",
        flag="slow-worker",
    )
    slow_mechanism: str = setting(
        "auto",
        "how a slow worker is slowed: a cgroup CPU cap (cgroup), SIGSTOP/SIGCONT in turn "
        "(duty-cycle), or the cgroup where this user may make one (auto)",
        flag="slow-worker-mechanism",
        choices=SLOW_MECHANISMS,
    )

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"workers must be at least 1, got {self.count}")
        self.slow_workers  # noqa: B018  (checks the format)

    @property
    def slow_workers(self) -> dict[str, float]:
        """`slow` as worker id -> factor."""
        slow: dict[str, float] = {}
        for item in (part.strip() for part in self.slow.split(",")):
            if not item:
                continue
            worker_id, _, factor = item.rpartition(":")
            try:
                value = float(factor)
            except ValueError:
                value = 0.0
            if not worker_id or not value > 1 or value == float("inf"):
                raise ValueError(
                    f"--slow-worker: {item!r} is not ID:FACTOR with a factor above 1; write "
                    f"e.g. --slow-worker local-1:4"
                )
            if worker_id in slow:
                raise ValueError(f"--slow-worker names {worker_id!r} twice; give each worker once")
            slow[worker_id] = value
        return slow

    def check_slow_ids(self, prefix: str) -> dict[str, float]:
        """The slow workers, each one of this backend's ids PREFIX-0 .. PREFIX-(count-1)."""
        ids = [f"{prefix}-{i}" for i in range(self.count)]
        unknown = sorted(set(self.slow_workers) - set(ids))
        if unknown:
            raise ValueError(
                f"--slow-worker names {', '.join(unknown)}, which this run does not have: its "
                f"workers are {', '.join(ids)}"
            )
        return self.slow_workers

    @property
    def address_list(self) -> tuple[str, ...]:
        return tuple(address.strip() for address in self.addresses.split(",") if address.strip())


@dataclasses.dataclass(frozen=True)
class RaySettings:
    """[ray]: the Ray cluster and what each Ray worker reserves on it."""

    address: str = setting(
        "",
        "empty: a private Ray on this machine, started and stopped by the run; otherwise the "
        "cluster to join (HOST:PORT of its head, auto, or ray://HOST:PORT)",
        flag="ray-address",
    )
    cpus: float = setting(1.0, "Ray CPUs each worker reserves", flag="worker-cpus")
    gpus: float = setting(
        0.0, "Ray GPUs each worker reserves (its binary sees only those)", flag="worker-gpus"
    )
    resources: str = setting(
        "",
        "custom Ray resources each worker reserves, name=amount,name=amount",
        flag="worker-resources",
    )
    placement_strategy: str = setting(
        "PACK",
        "how the workers' placement group spreads them over nodes (SPREAD: one per node where it can)",
        choices=PLACEMENT_STRATEGIES,
    )


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Everything a backend may read to build its options."""

    workers: WorkerSettings = WorkerSettings()
    ray: RaySettings = RaySettings()
