"""Worker backends by name, imported only when chosen so optional dependencies stay optional."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from cluster.backend import WorkerBackend, WorkerError


@dataclasses.dataclass(frozen=True)
class BackendEntry:
    module: str
    class_name: str
    extra: str | None  # pip extra that installs the backend's dependencies; None if always there


BACKENDS: dict[str, BackendEntry] = {
    "local": BackendEntry("cluster.local", "LocalProcessBackend", extra=None),
    "static": BackendEntry("cluster.static", "StaticBackend", extra=None),
    "ray": BackendEntry("cluster.ray_backend", "RayBackend", extra="ray"),
}


def create_backend(name: str, **options: Any) -> WorkerBackend:
    """Builds the backend registered as `name`; `options` go to its constructor."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise WorkerError(
            f"unknown worker backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}"
        )
    try:
        module = importlib.import_module(entry.module)
    except ImportError as error:
        if entry.extra is None:
            raise
        raise WorkerError(
            f"worker backend {name!r} needs {error.name or 'a package'} that is not installed; "
            f"install it with: pip install 'fedrun[{entry.extra}]'"
        ) from error
    backend_class: type[WorkerBackend] = getattr(module, entry.class_name)
    return backend_class(**options)
