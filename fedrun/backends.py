"""Turns the run's configuration into the chosen worker backend's options."""

import math
from pathlib import Path
from typing import Any

from fedrun.config import RunConfig
from fedrun.errors import FedrunError


def _process_options(config: RunConfig, log_dir: Path | None, isolation: str):
    """How each worker_binary process starts, wherever it runs."""
    from cluster.local import LocalWorkerOptions
    return LocalWorkerOptions(
        binary=Path(config.worker_binary) if config.worker_binary else None,
        max_concurrent_computation_calls=config.worker_max_concurrent_calls,
        intra_op_threads=config.worker_intra_op_threads,
        inter_op_threads=config.worker_inter_op_threads,
        ready_timeout_s=config.worker_start_timeout_s,
        log_dir=log_dir,
        isolation=isolation,
    )


def backend_options(config: RunConfig, run_path: Path) -> dict[str, Any]:
    if config.backend == "local":
        return {"options": _process_options(config, run_path / "workers", config.worker_isolation)}
    if config.backend == "static":
        from cluster.static import StaticWorkerOptions
        try:
            return {"options": StaticWorkerOptions(
                addresses=tuple(config.worker_address_list),
                allow_remote_workers=config.allow_remote_workers,
                ready_timeout_s=config.worker_start_timeout_s,
            )}
        except ValueError as e:  # addresses are checked here, where the backend's rules live
            raise FedrunError(f"invalid configuration: {e}") from None
    if config.backend == "ray":
        from cluster.ray_options import RayWorkerOptions  # free of Ray: create_backend says if it is missing
        # A private Ray's nodes are this machine, where the run's folder is; a cluster's are not.
        # No isolation: the coordinator dials each worker at its node's IP.
        process = _process_options(config, None if config.ray_address else run_path / "workers", "none")
        try:
            return {"options": RayWorkerOptions(
                address=config.ray_address, cpus=config.worker_cpus, gpus=config.worker_gpus,
                resources=parse_resources(config.worker_resources),
                placement_strategy=config.placement_strategy, process=process,
            )}
        except ValueError as e:
            raise FedrunError(f"invalid configuration: {e}") from None
    return {}


def parse_resources(text: str) -> dict[str, float]:
    """--worker-resources "name=amount,name=amount": the custom Ray resources each worker reserves."""
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
            raise FedrunError(f"worker_resources: {item!r} is not name=amount with a positive amount; "
                              f"write e.g. --worker-resources 'accelerator_a100=1,scratch_gb=20'")
        if name in ("CPU", "GPU"):
            raise FedrunError(f"worker_resources: set {name} with --worker-{name.lower()}s, not here")
        if name in resources:
            raise FedrunError(f"worker_resources names {name!r} twice; give each resource once")
        resources[name] = value
    return resources
