"""Addresses of workers someone else runs, checked without connecting to them."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.settings import ClusterSettings

_LOCAL_HOSTS = ("localhost",)

REMOTE_RISK = (
    "TFF's executor service runs any TensorFlow graph (which can read and write files) for "
    "whoever reaches its port, without authentication or encryption"
)


@dataclasses.dataclass(frozen=True)
class StaticWorkerOptions:
    """The addresses of running workers: "host:port", "[ipv6]:port" or "unix:/path"."""

    addresses: tuple[str, ...]
    allow_remote_workers: bool = False  # non-loopback addresses are refused unless set
    ready_timeout_s: float = 60.0  # for all addresses to answer at start(), and in replace()
    probe_timeout_s: float = 5.0  # bounds one is_alive()
    timeout_name: str = "ready_timeout_s"  # how the user sets ready_timeout_s, for messages

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("addresses must list at least one worker, e.g. ('host-a:8000',)")
        for address in self.addresses:
            _check_address(address)
        for name in ("ready_timeout_s", "probe_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        remote = self.remote_addresses
        if remote and not self.allow_remote_workers:
            raise ValueError(
                f"worker addresses {', '.join(remote)} are not on this machine, and {REMOTE_RISK}; "
                f"once the workers' network admits only the coordinator (Kubernetes "
                f"NetworkPolicy, firewall), set allow_remote_workers (fedrun: "
                f"--allow-remote-workers)"
            )

    @property
    def remote_addresses(self) -> list[str]:
        return [address for address in self.addresses if not _is_local(address)]

    def preflight(self) -> None:
        """Nothing to check on this machine: the workers run elsewhere."""


def from_settings(settings: ClusterSettings, log_dir: Path | None) -> StaticWorkerOptions:
    """One worker per address; fedrun starts none, so it keeps no logs of theirs."""
    workers = settings.workers
    addresses = workers.address_list
    if len(addresses) != workers.count:
        raise ValueError(
            f"the static backend runs one worker per address: worker_addresses lists "
            f"{len(addresses)}, workers is {workers.count}; pass e.g. "
            f"--workers 2 --worker-addresses host-a:8000,host-b:8000"
        )
    if workers.slow_workers:
        raise ValueError(
            "--slow-worker slows down workers fedrun starts (the local and ray backends); the static "
            "backend's workers run elsewhere: throttle them where they run (e.g. a pod's CPU limit)"
        )
    from cluster.settings import flag_of  # here: the settings module imports this one

    return StaticWorkerOptions(
        addresses=addresses,
        allow_remote_workers=workers.allow_remote,
        ready_timeout_s=workers.start_timeout_s,
        timeout_name=flag_of(type(workers), "start_timeout_s"),
    )


def _check_address(address: str) -> None:
    if address.startswith("unix:"):
        if not address.removeprefix("unix:"):
            raise ValueError(f"worker address {address!r} names no socket path; use unix:/path")
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"worker address {address!r} is not host:port, [ipv6]:port or unix:/path "
            f"(e.g. worker-0.fedrun-workers:8000)"
        )


def _is_local(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
