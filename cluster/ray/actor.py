"""The Ray actor behind each Ray worker: it starts one TFF worker_binary on its node and owns it.

The binary is started by a LocalProcessBackend inside the actor, so it gets what a local worker
gets: the same flags and thread limits, a kernel-picked port read back from /proc, bounded
readiness, and PR_SET_PDEATHSIG from a spawner thread that lives as long as the actor's process.
When the actor ends, even by SIGKILL or with its node, the kernel kills the binary.
This module imports neither TensorFlow nor fedrun: they would stretch the actor's start from
about 1 s to 7 s.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import time

import ray

from cluster.errors import WorkerError, WorkerStartError
from cluster.local.backend import LocalProcessBackend
from cluster.local.options import LocalWorkerOptions

_EXIT_GROUP = "exit"  # wait_for_exit() blocks in a thread of its own, apart from start and stop
_PROCESS_ID = "local-0"  # the one worker of the LocalProcessBackend inside the actor
_EXIT_POLL_S = 0.2


@ray.remote(concurrency_groups={_EXIT_GROUP: 1})
class WorkerActor:
    """One worker slot on a Ray node: its binary runs exactly as long as this actor."""

    def __init__(self, worker_id: str, options: LocalWorkerOptions) -> None:
        # Ray sets CUDA_VISIBLE_DEVICES only for actors with GPUs (and, in this version, "" for
        # the others): set it from the assignment itself, so a worker sees exactly its GPUs.
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in ray.get_gpu_ids())
        if options.log_dir is not None:  # shared by every worker of the run: one folder each
            options = dataclasses.replace(options, log_dir=options.log_dir / worker_id)
        self._worker_id = worker_id
        self._node_ip = ray.util.get_node_ip_address()
        self._processes = LocalProcessBackend(options)

    def start(self) -> str:
        """Starts the binary; returns its address at this node's IP once it accepts gRPC calls."""
        try:
            (worker,) = self._processes.start(1)
        except WorkerStartError as error:
            raise WorkerStartError(f"Ray worker {self._worker_id} on node {self._node_ip}: {error}") from None
        port = int(worker.target.rsplit(":", 1)[1])
        host = self._node_ip
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
        return f"{host}:{port}"

    def slowdown(self) -> str | None:
        """How the binary is slowed down (cluster.local.throttle), if it is."""
        slowed = self._processes.slowdowns().get(_PROCESS_ID)
        return slowed.mechanism if slowed else None

    @ray.method(concurrency_group=_EXIT_GROUP)
    def wait_for_exit(self) -> None:
        """Returns once the binary has exited: until then the caller's reference stays pending."""
        try:
            while self._processes.is_alive(_PROCESS_ID):
                time.sleep(_EXIT_POLL_S)
        except WorkerError:  # stopped, so it has exited
            return

    def stop(self) -> None:
        """Stops the binary (SIGTERM, then SIGKILL after a grace period)."""
        self._processes.stop()
