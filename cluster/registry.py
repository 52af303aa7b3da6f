"""Worker backends by name. A backend's implementation is imported only when it is created, so
optional dependencies stay optional; its options module (light, importable everywhere) builds
and checks the backend's options from the run's configuration sections."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Protocol

from cluster.backend import WorkerBackend
from cluster.errors import WorkerError
from cluster.settings import ClusterSettings


class BackendOptions(Protocol):
    """What every backend's options offer besides their own fields."""

    def preflight(self) -> None:
        """Checks what this machine must provide (e.g. the worker binary), starting nothing."""


@dataclasses.dataclass(frozen=True)
class BackendEntry:
    module: str  # the implementation, imported when the backend is created
    class_name: str
    options: str  # a module with from_settings(settings, log_dir); imports no optional package
    extra: str | None  # pip extra that installs the backend's dependencies; None if always there


BACKENDS: dict[str, BackendEntry] = {
    "local": BackendEntry("cluster.local.backend", "LocalProcessBackend", "cluster.local.options", None),
    "static": BackendEntry("cluster.static.backend", "StaticBackend", "cluster.static.options", None),
    "ray": BackendEntry("cluster.ray.backend", "RayBackend", "cluster.ray.options", "ray"),
}


def backend_options(settings: ClusterSettings, log_dir: Path | None = None) -> BackendOptions:
    """The chosen backend's options, built and checked by that backend; WorkerError if invalid.

    `log_dir` is where a backend that starts workers keeps their logs (None: a private folder).
    """
    entry = _entry(settings.workers.backend)
    try:
        return importlib.import_module(entry.options).from_settings(settings, log_dir)
    except ValueError as error:
        raise WorkerError(str(error)) from None


def create_backend(settings: ClusterSettings, log_dir: Path | None = None) -> WorkerBackend:
    """The backend the settings choose, over its own options; nothing is started yet."""
    entry = _entry(settings.workers.backend)
    options = backend_options(settings, log_dir)
    try:
        module = importlib.import_module(entry.module)
    except ImportError as error:
        if entry.extra is None:
            raise
        raise WorkerError(
            f"worker backend {settings.workers.backend!r} needs {error.name or 'a package'} that "
            f"is not installed; install it with: pip install 'fedrun[{entry.extra}]'"
        ) from error
    backend_class: type[WorkerBackend] = getattr(module, entry.class_name)
    return backend_class(options)


def _entry(name: str) -> BackendEntry:
    entry = BACKENDS.get(name)
    if entry is None:
        raise WorkerError(f"unknown worker backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    return entry
