"""What each Ray worker reserves, where it may be placed, and whether a cluster can hold them.

Free of Ray itself, so a configuration is checked (and these rules unit-tested) without it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.local.options import LocalWorkerOptions, process_options

if TYPE_CHECKING:
    from cluster.settings import ClusterSettings

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
_RESERVED_NAMES = {"CPU": "cpus", "GPU": "gpus"}
# Ray keeps resource amounts in units of 1/10000: compare with that tolerance.
_RESOURCE_EPSILON = 1e-4


@dataclasses.dataclass(frozen=True)
class RayWorkerOptions:
    """Each worker is a Ray actor that reserves one bundle of a placement group."""

    # "": a private Ray on this machine that start() starts and stop() shuts down (unless this
    # process is already connected to Ray); otherwise the cluster to join ("auto", "HOST:PORT",
    # "ray://HOST:PORT"), which fedrun neither starts nor stops.
    address: str = ""
    cpus: float = 1.0
    gpus: float = 0.0  # the worker's binary sees only these GPUs (CUDA_VISIBLE_DEVICES)
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)  # custom, per worker
    placement_strategy: str = "PACK"
    # How each actor starts its worker_binary on its node; ready_timeout_s bounds the whole start,
    # placement included. The coordinator dials workers over the network, so no isolation.
    process: LocalWorkerOptions = LocalWorkerOptions(isolation="none")
    slow: Mapping[str, float] = dataclasses.field(default_factory=dict)  # by Ray worker id: factor

    def __post_init__(self) -> None:
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ValueError(
                f"placement_strategy must be one of {', '.join(PLACEMENT_STRATEGIES)}; "
                f"got {self.placement_strategy!r}"
            )
        for name in ("cpus", "gpus"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must not be negative; got {getattr(self, name)}")
        for name, amount in self.resources.items():
            if name in _RESERVED_NAMES:
                raise ValueError(f"resource {name!r} is set with {_RESERVED_NAMES[name]}, not in resources")
            if not name or not amount > 0:
                raise ValueError(f"custom resources need a name and a positive amount; got {name!r}={amount}")
        if not any(self.bundle.values()):
            raise ValueError("a worker must reserve something: set cpus, gpus or resources")
        if self.process.slow:
            raise ValueError("Ray workers are slowed with slow (by Ray worker id), not process.slow")
        if self.process.isolation != "none":
            raise ValueError(
                f"Ray workers are dialled over the network, so process.isolation must be "
                f"'none'; got {self.process.isolation!r}"
            )

    def actor_process(self, worker_id: str) -> LocalWorkerOptions:
        """How one actor starts its binary: slowed if the worker is, its cgroup cap divided from
        the CPUs it reserves."""
        if worker_id not in self.slow:
            return self.process
        # The actor's own backend calls its one worker local-0.
        return dataclasses.replace(
            self.process, slow={"local-0": self.slow[worker_id]}, cpu_share=self.cpus or 1.0
        )

    @property
    def bundle(self) -> dict[str, float]:
        """One worker's reservation in Ray's resource names."""
        bundle = {"CPU": self.cpus, "GPU": self.gpus, **self.resources}
        return {name: amount for name, amount in bundle.items() if amount > 0}

    def preflight(self) -> None:
        """A private Ray runs the binary of this machine; a cluster's nodes bring their own."""
        if not self.address:
            self.process.preflight()


def from_settings(settings: ClusterSettings, log_dir: Path | None) -> RayWorkerOptions:
    """The Ray backend's options. No isolation: the coordinator dials each worker at its node's
    IP. A private Ray's nodes are this machine, where `log_dir` is; a cluster's are not."""
    ray = settings.ray
    return RayWorkerOptions(
        address=ray.address,
        cpus=ray.cpus,
        gpus=ray.gpus,
        resources=parse_resources(ray.resources),
        placement_strategy=ray.placement_strategy,
        process=process_options(settings.workers, None if ray.address else log_dir, "none"),
        slow=settings.workers.check_slow_ids("ray"),
    )


def parse_resources(text: str) -> dict[str, float]:
    """ "name=amount,name=amount": the custom Ray resources each worker reserves."""
    resources: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, amount = (piece.strip() for piece in item.partition("="))
        try:
            value = float(amount)
        except ValueError:
            value = math.nan
        if not name or not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"worker_resources: {item!r} is not name=amount with a positive amount; write "
                f"e.g. --worker-resources 'accelerator_a100=1,scratch_gb=20'"
            )
        if name in _RESERVED_NAMES:
            raise ValueError(f"worker_resources: set {name} with --worker-{name.lower()}s, not here")
        if name in resources:
            raise ValueError(f"worker_resources names {name!r} twice; give each resource once")
        resources[name] = value
    return resources


def capacity_shortfall(
    bundle: Mapping[str, float],
    count: int,
    strategy: str,
    nodes: Sequence[Mapping[str, float]],
) -> str | None:
    """Why `count` copies of `bundle` can never be placed on `nodes` (their total resources)
    with `strategy`, or None if they fit an idle cluster."""
    totals = {name: sum(node.get(name, 0.0) for node in nodes) for name in bundle}
    short = [
        f"{count} workers x {name}={amount:g} asks for {name}={amount * count:g}, but the cluster "
        f"has {name}={totals[name]:g} in all ({_per_node(name, nodes)})"
        for name, amount in bundle.items()
        if totals[name] + _RESOURCE_EPSILON < amount * count
    ]
    if short:
        return "; ".join(short)
    fits = [_copies_on(node, bundle) for node in nodes]
    if max(fits, default=0) == 0:
        return (
            f"no single node has a whole worker's {_format(bundle)} (nodes: "
            f"{'; '.join(_format(node, bundle) for node in nodes) or 'none'})"
        )
    if strategy == "STRICT_PACK" and max(fits) < count:
        return (
            f"STRICT_PACK puts all {count} workers on one node, but the largest holds "
            f"{max(fits)} of {_format(bundle)}"
        )
    if strategy == "STRICT_SPREAD" and sum(1 for fit in fits if fit) < count:
        return (
            f"STRICT_SPREAD puts each of {count} workers on its own node, but only "
            f"{sum(1 for fit in fits if fit)} nodes can hold {_format(bundle)}"
        )
    if sum(fits) < count:
        return (
            f"the nodes can hold {sum(fits)} workers of {_format(bundle)} each, not {count} "
            f"(nodes: {'; '.join(_format(node, bundle) for node in nodes)})"
        )
    return None


def _copies_on(node: Mapping[str, float], bundle: Mapping[str, float]) -> int:
    return min(
        math.floor(node.get(name, 0.0) / amount + _RESOURCE_EPSILON) for name, amount in bundle.items()
    )


def _per_node(name: str, nodes: Sequence[Mapping[str, float]]) -> str:
    return f"{', '.join(f'{node.get(name, 0.0):g}' for node in nodes)} per node"


def _format(resources: Mapping[str, float], only: Mapping[str, float] | None = None) -> str:
    names = only if only is not None else resources
    return "{" + ", ".join(f"{name}={resources.get(name, 0.0):g}" for name in names) + "}"
