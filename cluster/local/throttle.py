"""Slowing a real worker process down by a factor, for straggler experiments and tests.

Two mechanisms, both acting on the worker's whole process group from outside it (nothing in the
worker or in fedrun's code waits):
- "cgroup": the kernel's CFS bandwidth control (cluster.local.cgroups) caps the group at its fair
  share of CPUs divided by the factor, as a throttled VM or a container's CPU limit is capped;
- "duty-cycle": SIGSTOP and SIGCONT in turn, running 1/factor of every period, as a node that
  gets a fraction of its time; it works for any user on any Linux.
"auto" takes the cgroup where this process may make one, the duty cycle otherwise.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Protocol

import psutil

from cluster.errors import WorkerStartError
from cluster.local import cgroups

DUTY_PERIOD_S = 0.02  # short against one client's training (a few ms), long against a context switch
_LOG = logging.getLogger(__name__)


class Throttle(Protocol):
    mechanism: str  # what runs, in words, for the run's records

    def release(self) -> None:
        """Full speed again, and nothing left behind; safe to call twice."""


class DutyCycle:
    """Stops and continues a process group: it runs `1/factor` of every DUTY_PERIOD_S."""

    mechanism = "stop/continue duty cycle"

    def __init__(self, process_group: int, factor: float):
        self._group = process_group
        self._running_s = DUTY_PERIOD_S / factor
        self._stopped_s = DUTY_PERIOD_S - self._running_s
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._cycle, name=f"duty-cycle-{process_group}", daemon=True)
        self._thread.start()

    def _cycle(self) -> None:
        try:
            while not self._released.wait(self._running_s):
                os.killpg(self._group, signal.SIGSTOP)
                if self._released.wait(self._stopped_s):
                    break
                os.killpg(self._group, signal.SIGCONT)
        except ProcessLookupError:  # the group is gone
            return
        finally:
            _continue(self._group)

    def release(self) -> None:
        self._released.set()
        self._thread.join()
        _continue(self._group)


class CgroupThrottle:
    """Holds a process group's processes in a cgroup capped at `cpus` CPUs."""

    def __init__(self, hierarchy: cgroups.Hierarchy, name: str, process_group: int, cpus: float):
        self.mechanism = f"{hierarchy.mechanism} at {cpus:.3g} CPUs"
        self._limit: cgroups.CpuLimit | None = cgroups.CpuLimit(hierarchy, name, cpus)
        try:
            self._limit.add(_members(process_group))
        except BaseException:
            self.release()
            raise

    def throttled_periods(self) -> int:
        return self._limit.throttled_periods() if self._limit else 0

    def release(self) -> None:
        if self._limit is not None:
            self._limit.remove()
            self._limit = None


def throttle(mechanism: str, name: str, process_group: int, factor: float, cpu_share: float) -> Throttle:
    """Slows the process group `factor` times; `cpu_share` is the CPUs it would get unslowed
    (what the cgroup's cap is divided from)."""
    if mechanism != "duty-cycle":
        hierarchy = cgroups.find()
        if isinstance(hierarchy, cgroups.Hierarchy):
            return CgroupThrottle(hierarchy, name, process_group, cpu_share / factor)
        if mechanism == "cgroup":
            raise WorkerStartError(
                f"cannot slow worker {name} with a cgroup: {hierarchy}; use the duty-cycle "
                f"mechanism, or run where this user may create cpu cgroups"
            )
        _LOG.info("slowing worker %s with a duty cycle: %s", name, hierarchy)
    return DutyCycle(process_group, factor)


def _members(process_group: int) -> list[int]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == process_group:
                members.append(process.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def _continue(process_group: int) -> None:
    try:
        os.killpg(process_group, signal.SIGCONT)
    except ProcessLookupError:
        pass
