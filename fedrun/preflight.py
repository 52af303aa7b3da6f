"""Checks that need no TensorFlow, run before it loads (seconds), so the commonest mistakes fail
at once and before anything in the output directory changes."""

from cluster import find_worker_binary
from fedrun.config import RunConfig
from fedrun.results import RunDirectory


def preflight(config: RunConfig) -> None:
    RunDirectory(config.out)  # exists or can be made, and is writable
    if config.backend in ("local", "ray") and not config.ray_address:
        find_worker_binary(config.worker_binary or None)
