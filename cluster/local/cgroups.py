"""A CPU limit on a set of processes through the kernel's CFS bandwidth control: a cgroup of its
own under this process's, with cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us` (the same mechanism).

Only where this user may create cgroups with the cpu controller (a root container, a delegated
systemd slice); `unavailable()` says why not otherwise. Groups are named after the process that
made them, so a later run removes those whose maker died before it could (`remove_orphans`).
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PREFIX = "fedrun-"
PERIOD_US = 20_000  # short against one client's training (a few ms), so its measured time sees the cap
_MIN_QUOTA_US = 1_000  # the kernel's minimum
_EMPTY_WAIT_S = 2.0  # a killed process leaves its cgroup within milliseconds
_OWNER = re.compile(rf"^{PREFIX}(\d+)-")


@dataclass(frozen=True)
class Hierarchy:
    """Where this process's cpu cgroup is, and which interface it has."""

    path: Path  # this process's own cgroup directory
    version: int  # 2: cpu.max; 1: cpu.cfs_quota_us and cpu.cfs_period_us

    @property
    def mechanism(self) -> str:
        return "cgroup v2 cpu.max" if self.version == 2 else "cgroup v1 cpu.cfs_quota_us"


def find() -> Hierarchy | str:
    """This process's cpu cgroup if a child of it can be made and limited here; else why not."""
    mounts = _mounts()
    own = _own_cgroups()
    reasons = []
    v2 = mounts.get("cgroup2")
    if v2 is not None and "" in own:
        path = _inside(v2, own[""])
        controls = _read(path / "cgroup.subtree_control").split()
        if "cpu" in controls and os.access(path, os.W_OK):
            return Hierarchy(path, 2)
        reasons.append(f"cgroup v2 at {path} does not delegate the cpu controller to child groups")
    v1 = mounts.get("cpu")
    if v1 is not None:
        name = next((n for n in own if "cpu" in n.split(",")), None)
        if name is not None:
            path = _inside(v1, own[name])
            if os.access(path, os.W_OK) and (path / "cpu.cfs_quota_us").exists():
                return Hierarchy(path, 1)
            reasons.append(f"cgroup v1 cpu hierarchy at {path} is not writable by this user")
    return "; ".join(reasons) or "no cgroup with the cpu controller is mounted"


class CpuLimit:
    """A cgroup holding some processes to at most `cpus` CPUs' worth of time per period."""

    def __init__(self, hierarchy: Hierarchy, name: str, cpus: float):
        remove_orphans(hierarchy)
        self.hierarchy = hierarchy
        self.path = hierarchy.path / f"{PREFIX}{os.getpid()}-{name}"
        self.path.mkdir()
        quota = max(_MIN_QUOTA_US, round(PERIOD_US * cpus))
        try:
            if hierarchy.version == 2:
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError:
            self.path.rmdir()
            raise

    def add(self, pids: Iterable[int]) -> None:
        """Moves the processes (all their threads) into the group."""
        for pid in pids:
            try:
                (self.path / "cgroup.procs").write_text(str(pid))
            except ProcessLookupError:
                pass  # it exited meanwhile
            except OSError as error:
                if error.errno != errno.ESRCH:
                    raise

    def throttled_periods(self) -> int:
        """Periods in which the group ran out of quota (cpu.stat `nr_throttled`)."""
        for line in _read(self.path / "cpu.stat").splitlines():
            key, _, value = line.partition(" ")
            if key == "nr_throttled":
                return int(value)
        return 0

    def remove(self) -> None:
        """Moves any process still inside back to the parent group, then removes the group."""
        _remove(self.path, move_to=self.hierarchy.path)


def remove_orphans(hierarchy: Hierarchy) -> None:
    """Removes the groups that processes which are gone made here."""
    for path in hierarchy.path.glob(f"{PREFIX}*"):
        owner = _OWNER.match(path.name)
        if owner and not _alive(int(owner.group(1))):
            _remove(path, move_to=hierarchy.path)


def _remove(path: Path, move_to: Path) -> None:
    deadline = time.monotonic() + _EMPTY_WAIT_S
    while True:
        for pid in _read(path / "cgroup.procs").split():
            try:
                (move_to / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # exited meanwhile
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:  # EBUSY: a process is still leaving
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                return
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _mounts() -> dict[str, tuple[Path, str]]:
    """cgroup mounts: "cgroup2", and each v1 controller, to (mount point, root inside the hierarchy)."""
    found: dict[str, tuple[Path, str]] = {}
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        fields, _, rest = line.partition(" - ")
        fields, rest = fields.split(), rest.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        kind, root, mount_point = rest[0], fields[3], Path(fields[4])
        if kind == "cgroup2":
            found.setdefault("cgroup2", (mount_point, root))
        elif kind == "cgroup":
            for option in rest[2].split(","):
                found.setdefault(option, (mount_point, root))
    return found


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup by hierarchy: v1 controller lists ("cpu,cpuacct"), "" for v2."""
    own = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path
    return own


def _inside(mount: tuple[Path, str], path: str) -> Path:
    mount_point, root = mount
    relative = path[len(root) :] if root != "/" and path.startswith(root) else path
    return mount_point / relative.lstrip("/")
