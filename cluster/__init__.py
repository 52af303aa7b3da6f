"""Worker backends: start TFF executor-service workers, give their gRPC targets, stop them.

Knows nothing of federated learning; the coordinator only dials `Worker.target`.
"""

from cluster.backend import Capabilities, Slowdown, Worker, WorkerBackend
from cluster.errors import UserError, WorkerError, WorkerStartError
from cluster.local.backend import LocalProcessBackend
from cluster.local.binary import find_worker_binary
from cluster.local.foreground import serve_worker
from cluster.local.options import LocalWorkerOptions
from cluster.registry import BACKENDS, backend_options, create_backend
from cluster.settings import ClusterSettings, RaySettings, WorkerSettings, setting

__all__ = [
    "BACKENDS",
    "Capabilities",
    "ClusterSettings",
    "LocalProcessBackend",
    "LocalWorkerOptions",
    "RaySettings",
    "Slowdown",
    "UserError",
    "Worker",
    "WorkerBackend",
    "WorkerError",
    "WorkerSettings",
    "WorkerStartError",
    "backend_options",
    "create_backend",
    "find_worker_binary",
    "serve_worker",
    "setting",
]
