"""A private network of Linux network namespaces standing in for hosts: one namespace per host,
each joined by a veth pair to a bridge that lives in a namespace of its own, so nothing is
attached to (or routed through) the machine's own namespace. Needs root and `ip` (iproute2).

Every name starts with `fedrun-mh-<pid>-`, so one left behind by a test process that was killed
outright can be recognised, and removed, by the next one (`remove_orphans`); the same goes for
the blackhole route that keeps the subnet from leaving the machine (`blackhole_route`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil

from cluster.local.spawner import Spawner

PREFIX = "fedrun-mh-"
_ORPHAN = re.compile(rf"^{PREFIX}(\d+)-")
_NETNS_ETC = Path("/etc/netns")  # `ip netns exec NAME` bind-mounts NAME's files over /etc
_EXIT_WAIT_S = 10.0


class NetnsError(RuntimeError):
    """An `ip` command failed; the message holds the command and its stderr."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip`, `ip netns add` refused), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"{PREFIX}{os.getpid()}-probe"
    added = ip("netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"`ip netns add` is not permitted here: {added.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


@dataclasses.dataclass(frozen=True)
class Host:
    """One namespace: `node` is its short name, `names` what its hosts file resolves to `address`."""

    node: str
    address: str
    names: tuple[str, ...]


class Network:
    """Namespaces for `hosts` on one /24 behind a bridge; `close()` removes all of it, and the
    processes inside, whatever state creation stopped in (safe to call twice)."""

    def __init__(self, hosts: Sequence[Host], prefix_len: int = 24) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self.hosts = {host.node: host for host in hosts}
        self._prefix_len = prefix_len
        self._created: list[str] = []  # namespaces, in creation order
        self._bridge_ns = f"{self.tag}-net"
        self._spawner: Spawner | None = None

    def namespace(self, node: str) -> str:
        return f"{self.tag}-{node}"

    def create(self) -> Network:
        # What runs inside dies with this process even if it is SIGKILLed; the namespaces then
        # stay until the next test process's remove_orphans().
        self._spawner = Spawner()
        try:
            self._add_namespace(self._bridge_ns)
            ip("-n", self._bridge_ns, "link", "add", "br0", "type", "bridge")
            ip("-n", self._bridge_ns, "link", "set", "br0", "up")
            ip("-n", self._bridge_ns, "link", "set", "lo", "up")
            hosts_file = self._hosts_file()
            for index, host in enumerate(self.hosts.values()):
                self._add_host(index, host, hosts_file)
        except BaseException:
            self.close()
            raise
        return self

    def popen(self, node: str, argv: Sequence[str], **kwargs) -> subprocess.Popen[str]:
        """`argv` run inside `node`'s namespace (`ip netns exec` execs it: the pid is argv's)."""
        if self._spawner is None:
            raise NetnsError("the network is not created, or closed")
        return self._spawner.popen(["ip", "netns", "exec", self.namespace(node), *argv], text=True, **kwargs)

    def run(self, node: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess[str]:
        command = ["ip", "netns", "exec", self.namespace(node), *argv]
        return subprocess.run(command, capture_output=True, text=True, **kwargs)

    def kill_processes(self, node: str) -> None:
        """SIGKILL to everything in `node`'s namespace, whoever started it; returns once all are gone."""
        _kill_all(self.namespace(node))

    def close(self) -> None:
        for namespace in reversed(self._created):
            _remove_namespace(namespace)
        self._created.clear()
        if self._spawner is not None:
            self._spawner.close()
            self._spawner = None

    def _add_namespace(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        self._created.append(namespace)

    def _add_host(self, index: int, host: Host, hosts_file: str) -> None:
        namespace = self.namespace(host.node)
        # /etc/netns/NAME must exist before anything runs there: `ip netns exec` mounts it then.
        etc = _NETNS_ETC / namespace
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(hosts_file)
        self._add_namespace(namespace)
        port = f"v{index}"  # the bridge's side; interface names are at most 15 characters
        # Both ends are created straight inside their namespaces: neither ever exists in ours.
        ip(
            "link", "add", "eth0", "netns", namespace, "type", "veth",
            "peer", "name", port, "netns", self._bridge_ns,
        )  # fmt: skip
        ip("-n", self._bridge_ns, "link", "set", port, "master", "br0")
        ip("-n", self._bridge_ns, "link", "set", port, "up")
        ip("-n", namespace, "addr", "add", f"{host.address}/{self._prefix_len}", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")

    def _hosts_file(self) -> str:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{host.address} {' '.join(host.names)}" for host in self.hosts.values()]
        return "\n".join(lines) + "\n"


def _remove_namespace(namespace: str) -> None:
    """Kills what runs inside (deleting a namespace would not), then deletes it and its /etc."""
    _kill_all(namespace)
    ip("netns", "del", namespace, check=False)  # its veth ends go with it
    shutil.rmtree(_NETNS_ETC / namespace, ignore_errors=True)


def _kill_all(namespace: str) -> None:
    deadline = time.monotonic() + _EXIT_WAIT_S
    while time.monotonic() < deadline:
        pids = [int(pid) for pid in ip("netns", "pids", namespace, check=False).stdout.split()]
        alive = [pid for pid in pids if _running(pid)]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise NetnsError(f"processes in namespace {namespace} survived SIGKILL for {_EXIT_WAIT_S:g} s")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def remove_orphans() -> list[str]:
    """Removes the namespaces (their processes and /etc) of test processes that are gone."""
    listed = [
        line.split()[0] for line in ip("netns", "list", check=False).stdout.splitlines() if line.split()
    ]
    named = {*listed, *(path.name for path in _NETNS_ETC.glob(f"{PREFIX}*"))}
    removed = []
    for namespace in sorted(named):
        match = _ORPHAN.match(namespace)
        if match and not psutil.pid_exists(int(match.group(1))):
            _remove_namespace(namespace)
            removed.append(namespace)
    return removed


# Our blackhole routes are told apart by protocol number, and by owner: the metric is the pid
# of the test process that added it (routes that differ in metric coexist).
_ROUTE_PROTO = "250"


@contextmanager
def blackhole_route(subnet: str) -> Iterator[None]:
    """A blackhole route for `subnet` in this namespace while inside, removed after if this
    process added it (routes for `subnet` that others added are left alone)."""
    _remove_orphan_routes(subnet)
    route = ["blackhole", subnet, "proto", _ROUTE_PROTO, "metric", str(os.getpid())]
    added = ip("route", "add", *route, check=False)
    if added.returncode != 0 and not ip("route", "show", "exact", subnet, "metric", str(os.getpid())).stdout:
        raise NetnsError(f"could not add a blackhole route for {subnet}: {added.stderr.strip()}")
    try:
        yield
    finally:
        if added.returncode == 0:
            ip("route", "del", *route, check=False)


def other_routes(subnet: str) -> list[str]:
    """Routes for `subnet` in this namespace that are not a test's blackhole."""
    listed = ip("route", "show", "exact", subnet, check=False).stdout.splitlines()
    return [line for line in listed if f"proto {_ROUTE_PROTO} " not in f"{line} "]


def _remove_orphan_routes(subnet: str) -> None:
    ours = ["blackhole", subnet, "proto", _ROUTE_PROTO]
    listed = ip("route", "show", "type", *ours, check=False).stdout
    for owner in re.findall(r"metric (\d+)", listed):
        if not psutil.pid_exists(int(owner)):
            ip("route", "del", *ours, "metric", owner, check=False)
