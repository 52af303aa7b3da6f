"""Turns the run's configuration into the chosen worker backend's options."""

from pathlib import Path
from typing import Any

from fedrun.config import RunConfig


def backend_options(config: RunConfig, run_path: Path) -> dict[str, Any]:
    if config.backend == "local":
        from cluster.local import LocalWorkerOptions
        return {"options": LocalWorkerOptions(
            max_concurrent_computation_calls=config.worker_max_concurrent_calls,
            ready_timeout_s=config.worker_start_timeout_s,
            log_dir=run_path / "workers",
        )}
    return {}
