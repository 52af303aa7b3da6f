"""Worker backends: start TFF executor-service workers, give their gRPC targets, stop them.

Knows nothing of federated learning; the coordinator only dials `Worker.target`.
"""

from cluster.backend import Worker, WorkerBackend, WorkerError, WorkerStartError
from cluster.local import LocalProcessBackend, LocalWorkerOptions
from cluster.registry import BACKENDS, create_backend
from cluster.worker_binary import find_worker_binary

__all__ = [
    "BACKENDS",
    "LocalProcessBackend",
    "LocalWorkerOptions",
    "Worker",
    "WorkerBackend",
    "WorkerError",
    "WorkerStartError",
    "create_backend",
    "find_worker_binary",
]
