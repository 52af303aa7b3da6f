"""Finds TFF's C++ executor-service binary without importing TensorFlow.

Importing tensorflow_federated takes seconds and would pull TensorFlow into processes (such as
Ray actors) that only need to start the binary.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from cluster.errors import WorkerStartError

_PATH_IN_PACKAGE = Path("data", "worker_binary")


def find_worker_binary(path: str | os.PathLike[str] | None = None) -> Path:
    """Returns `path`, or the worker_binary shipped in the tensorflow_federated package."""
    if path is not None:
        return _executable(Path(path), fix="pass the path of TFF's worker_binary")
    spec = importlib.util.find_spec("tensorflow_federated")
    if spec is None or not spec.submodule_search_locations:
        raise WorkerStartError(
            "tensorflow_federated is not installed, so its worker_binary cannot be found; "
            "install requirements/tff.txt or pass the binary's path"
        )
    candidates = [Path(location) / _PATH_IN_PACKAGE for location in spec.submodule_search_locations]
    return _executable(
        next((candidate for candidate in candidates if candidate.exists()), candidates[0]),
        fix="reinstall tensorflow_federated (its wheel ships the binary) or pass the binary's path",
    )


def _executable(path: Path, fix: str) -> Path:
    if not path.is_file():
        raise WorkerStartError(f"worker binary {path} does not exist; {fix}")
    if not os.access(path, os.X_OK):
        raise WorkerStartError(f"worker binary {path} is not executable; run: chmod +x {path}")
    return path
