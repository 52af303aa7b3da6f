"""Workers as Ray actors, one TFF worker_binary each, on the nodes of a Ray cluster.

Each worker reserves one bundle of a placement group (its CPUs, GPUs and custom resources, placed
by the chosen strategy) and is an actor (cluster.ray.actor) that starts the binary on its node
and reports `node IP:port`. The coordinator dials that address as it dials a local worker.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid

import grpc
import psutil
import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.backend import Slowdown, Worker, WorkerBackend, slot_of
from cluster.errors import WorkerError, WorkerStartError
from cluster.ray.actor import WorkerActor
from cluster.ray.options import RayWorkerOptions, capacity_shortfall

_LOG = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 10.0  # each actor stops its binary within the local backend's grace period
_JOIN_PROBE_S = 10.0  # a cluster's head answers in milliseconds
# Ray reads these at ray.init. No usage statistics sent anywhere; and no override of
# CUDA_VISIBLE_DEVICES for GPU-less actors (WorkerActor sets it itself), nor the warning about it.
_RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}
_RAY_PACKAGE = os.path.dirname(ray.__file__)


@dataclasses.dataclass
class _Slot:
    bundle_index: int
    actor: ray.actor.ActorHandle
    worker: Worker
    exited: ray.ObjectRef  # ready once the binary exits or the actor dies, for whatever reason
    slowdown: Slowdown | None  # how its binary is slowed on purpose, if it is


class RayBackend(WorkerBackend):
    """Runs each worker as a Ray actor; worker ids are "ray-0", "ray-1", ...

    Like a local worker, the binary listens on all of its node's interfaces without
    authentication: keep the cluster's network private to it and the coordinator.
    """

    def __init__(self, options: RayWorkerOptions | None = None) -> None:
        self._options = options or RayWorkerOptions()
        self._lock = threading.RLock()
        self._slots: dict[str, _Slot] = {}
        self._starting: list[ray.actor.ActorHandle] = []  # created, not yet in a slot
        self._placement_group: PlacementGroup | None = None
        self._disconnect = False  # whether stop() ends this process's connection to Ray
        self._private_ray: list[psutil.Process] = []  # the local Ray's processes, if we started it

    def start(self, num_workers: int) -> list[Worker]:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1; got {num_workers}")
        with self._lock:
            if self._placement_group is not None:
                raise WorkerError("this backend already runs workers; call stop() first")
            deadline = time.monotonic() + self._options.process.ready_timeout_s
            try:
                self._connect(deadline)
                atexit.register(self.stop)
                self._placement_group = self._reserve(num_workers, deadline)
                # All actors start at once, so waiting on them in turn costs the slowest one.
                launched = [
                    (f"ray-{index}", index, *self._launch(f"ray-{index}", index))
                    for index in range(num_workers)
                ]
                for worker_id, index, actor, started in launched:
                    slot = self._await_ready(worker_id, index, actor, started, deadline)
                    self._slots[worker_id] = slot
            except BaseException:
                self.stop()
                raise
            return self.workers()

    def workers(self) -> list[Worker]:
        with self._lock:
            return [slot.worker for slot in self._slots.values()]

    def is_alive(self, worker_id: str) -> bool:
        """Non-blocking: the slot's exit notice is still pending. Ray resolves it within a second
        of the actor's or binary's death, or once its health checks find the node lost."""
        with self._lock:
            exited = self._slot_of(worker_id).exited
            if not ray.is_initialized():  # disconnected: Ray ends a driver's actors with it
                return False
            ready, _ = ray.wait([exited], timeout=0, fetch_local=False)
            return not ready

    def replace(self, worker_id: str) -> Worker:
        """A fresh actor in the slot's bundle (Ray re-reserves it elsewhere if its node is lost)."""
        with self._lock:
            slot = self._slot_of(worker_id)
            if not ray.is_initialized():  # any Ray call now would start a new, empty Ray
                raise WorkerError(
                    f"cannot replace worker {worker_id}: this process's connection to Ray was "
                    f"ended (ray.shutdown() outside the backend); start the run again"
                )
            ray.kill(slot.actor)  # the old binary dies with its actor
            deadline = time.monotonic() + self._options.process.ready_timeout_s
            actor, started = self._launch(worker_id, slot.bundle_index)
            try:
                self._slots[worker_id] = self._await_ready(
                    worker_id, slot.bundle_index, actor, started, deadline
                )
            except BaseException:
                ray.kill(actor)
                self._starting.remove(actor)
                raise
            return self._slots[worker_id].worker

    def slowdowns(self) -> dict[str, Slowdown]:
        with self._lock:
            return {worker_id: slot.slowdown for worker_id, slot in self._slots.items() if slot.slowdown}

    def stop(self) -> None:
        with self._lock:
            if ray.is_initialized():
                actors = [slot.actor for slot in self._slots.values()] + self._starting
                # Each actor stops its binary in turn; killing the actor then ends the process.
                if stopping := [actor.stop.remote() for actor in actors]:
                    ray.wait(stopping, num_returns=len(stopping), timeout=_STOP_TIMEOUT_S)
                for actor in actors:
                    ray.kill(actor)
                if self._placement_group is not None:
                    remove_placement_group(self._placement_group)
                # Before shutdown: then Ray's workers are still children of its raylet.
                private_ray = _with_descendants(self._private_ray)
                if self._disconnect:
                    ray.shutdown()
                _await_exit(private_ray)
            self._slots.clear()
            self._starting.clear()
            self._placement_group = None
            self._disconnect = False
            self._private_ray = []
            atexit.unregister(self.stop)

    def _connect(self, deadline: float) -> None:
        address = self._options.address
        if ray.is_initialized():
            if address:
                raise WorkerError(
                    f"this process is already connected to Ray, so it cannot join {address!r}; "
                    f"leave the address empty to use that connection, or call ray.shutdown() first"
                )
            return  # someone else's connection: theirs to end
        for name, value in _RAY_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        before = set(psutil.Process().children())
        try:
            if address:
                _await_answer(address, min(deadline, time.monotonic() + _JOIN_PROBE_S))
                ray.init(address=address, **quiet)
            else:
                # "local" never joins a cluster that happens to run here; all on loopback.
                ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            what = f"join the Ray cluster at {address!r}" if address else "start a local Ray"
            raise WorkerStartError(
                f"could not {what}: {error}; check the address (the head node's HOST:PORT, or "
                f"'auto' on a node of the cluster) and that `ray status` works there"
            ) from error
        self._disconnect = True
        if not address:
            self._private_ray = [p for p in set(psutil.Process().children()) - before if _is_ray(p)]

    def _reserve(self, num_workers: int, deadline: float) -> PlacementGroup:
        """One bundle per worker; fails at once if the cluster could never hold them."""
        options = self._options
        bundle = options.bundle
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        shortfall = capacity_shortfall(bundle, num_workers, options.placement_strategy, nodes)
        if shortfall is not None:
            raise WorkerStartError(
                f"the Ray cluster cannot hold {num_workers} workers: {shortfall}. Ask for less "
                f"per worker (cpus, gpus, resources), run fewer workers, or add nodes that have it"
            )
        group = placement_group(
            [bundle] * num_workers,
            strategy=options.placement_strategy,
            name=f"fedrun-{os.getpid()}-{uuid.uuid4().hex[:8]}",  # unique in the cluster
        )
        ready, _ = ray.wait([group.ready()], timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            remove_placement_group(group)
            raise WorkerStartError(
                f"Ray did not reserve {num_workers} x {bundle} ({options.placement_strategy}) "
                f"{options.process.within} although the "
                f"cluster has that much: other work holds it (available now: "
                f"{ray.available_resources()}); wait for it to end, ask for less, or raise "
                f"{options.process.timeout_name}"
            )
        return group

    def _launch(self, worker_id: str, bundle_index: int) -> tuple[ray.actor.ActorHandle, ray.ObjectRef]:
        options = self._options
        actor = WorkerActor.options(
            num_cpus=options.cpus,
            num_gpus=options.gpus,
            resources=dict(options.resources),
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                self._placement_group, placement_group_bundle_index=bundle_index
            ),
        ).remote(worker_id, options.actor_process(worker_id))
        self._starting.append(actor)
        return actor, actor.start.remote()

    def _await_ready(
        self,
        worker_id: str,
        bundle_index: int,
        actor: ray.actor.ActorHandle,
        started: ray.ObjectRef,
        deadline: float,
    ) -> _Slot:
        try:
            target = ray.get(started, timeout=max(0.0, deadline - time.monotonic()))
        except ray.exceptions.GetTimeoutError:
            raise WorkerStartError(
                f"Ray worker {worker_id} was not ready {self._options.process.within}: its "
                f"actor was not scheduled or did not start its binary; see `ray status` and the "
                f"actor's log (`ray logs`), or raise {self._options.process.timeout_name} if the "
                f"cluster is busy"
            ) from None
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, WorkerError):
                raise WorkerStartError(str(error.cause)) from None
            raise WorkerStartError(f"Ray worker {worker_id} failed to start: {error.cause!r}") from None
        except ray.exceptions.RayActorError as error:
            raise WorkerStartError(
                f"Ray worker {worker_id}'s actor could not start: {error}. Every node needs "
                f"fedrun and tensorflow_federated installed in the Python that Ray runs"
            ) from None
        _await_reachable(worker_id, target, deadline, self._options.process.within)
        slowdown = None
        if worker_id in self._options.slow:
            mechanism = ray.get(actor.slowdown.remote(), timeout=max(1.0, deadline - time.monotonic()))
            slowdown = Slowdown(self._options.slow[worker_id], f"{mechanism} on the worker's Ray node")
        slot = _Slot(bundle_index, actor, Worker(worker_id, target), actor.wait_for_exit.remote(), slowdown)
        self._starting.remove(actor)
        _LOG.info("worker %s ready at %s", worker_id, target)
        return slot

    def _slot_of(self, worker_id: str) -> _Slot:
        return slot_of(self._slots, worker_id)


def _await_answer(address: str, deadline: float) -> None:
    """Fails fast where nothing listens: ray.init would retry such an address for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():  # "auto": Ray looks the address up itself, and fails at once
        return
    timeout_s = max(0.1, deadline - time.monotonic())
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise WorkerStartError(
            f"nothing answers at the Ray address {address!r} ({error}); give the head node's "
            f"HOST:PORT (`ray status` on the head prints it) and check that the cluster runs"
        ) from None


def _await_reachable(worker_id: str, target: str, deadline: float, within: str) -> None:
    """The actor saw its binary ready on its node; this checks the coordinator reaches it too."""
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            raise WorkerStartError(
                f"Ray worker {worker_id} listens at {target} on its node, but this coordinator "
                f"could not connect {within}; let the coordinator "
                f"reach the nodes' ports"
            ) from None


def _is_ray(process: psutil.Process) -> bool:
    """Ray's daemons all run from its package: tells them from children started meanwhile."""
    try:
        return any(arg.startswith(_RAY_PACKAGE) for arg in process.cmdline())
    except psutil.NoSuchProcess:
        return False


def _with_descendants(processes: list[psutil.Process]) -> list[psutil.Process]:
    family = []
    for process in processes:
        try:
            family += [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return family


def _await_exit(processes: list[psutil.Process]) -> None:
    """Waits for a private Ray's processes to end, then kills any still running.

    Polls rather than psutil.wait_procs: workers orphaned by the raylet may stay zombies.
    """
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while (running := [p for p in processes if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in running:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
