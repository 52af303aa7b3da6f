"""Slowing a real process down (cluster.local.throttle): a busy Python process in its own process
group, throttled from outside; its CPU time over a window shows the cap. No worker is started."""

import subprocess
import sys
import time

import psutil
import pytest

from cluster.errors import WorkerStartError
from cluster.local import cgroups
from cluster.local.throttle import CgroupThrottle, DutyCycle, throttle

FACTOR = 4.0
WINDOW_S = 1.5


@pytest.fixture
def spinner():
    """A process that burns one CPU, leading its own process group, as a worker does."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def cpu_fraction(pid: int) -> float:
    """Share of one CPU the process used over WINDOW_S."""
    process = psutil.Process(pid)
    before, started = sum(process.cpu_times()[:2]), time.monotonic()
    time.sleep(WINDOW_S)
    return (sum(process.cpu_times()[:2]) - before) / (time.monotonic() - started)


def check_throttled_then_released(held, spinner) -> None:
    slowed = cpu_fraction(spinner.pid)
    held.release()
    held.release()  # safe twice
    full = cpu_fraction(spinner.pid)
    # 1/4 of a CPU while held (the machine is shared: generous bounds), most of one after.
    assert slowed < 0.45, slowed
    assert full > 1.6 * slowed, (slowed, full)
    assert psutil.Process(spinner.pid).status() != psutil.STATUS_STOPPED


def test_a_duty_cycle_runs_the_group_a_fraction_of_the_time(spinner):
    held = DutyCycle(spinner.pid, FACTOR)
    assert held.mechanism == "stop/continue duty cycle"
    check_throttled_then_released(held, spinner)


@pytest.mark.skipif(
    not isinstance(cgroups.find(), cgroups.Hierarchy), reason=f"no cpu cgroup to make here: {cgroups.find()}"
)
def test_a_cgroup_caps_the_group_and_is_removed_after(spinner):
    held = throttle("cgroup", "test-spinner", spinner.pid, FACTOR, cpu_share=1.0)
    assert isinstance(held, CgroupThrottle) and "at 0.25 CPUs" in held.mechanism
    path = held._limit.path
    assert str(spinner.pid) in (path / "cgroup.procs").read_text().split()
    time.sleep(0.5)
    assert held.throttled_periods() > 0  # the kernel throttled it, not a sleep of ours
    check_throttled_then_released(held, spinner)
    assert not path.exists()


def test_auto_falls_back_to_the_duty_cycle_without_a_cgroup(spinner, monkeypatch):
    monkeypatch.setattr(cgroups, "find", lambda: "no cgroup with the cpu controller is mounted")
    held = throttle("auto", "test-spinner", spinner.pid, FACTOR, cpu_share=1.0)
    try:
        assert isinstance(held, DutyCycle)
    finally:
        held.release()
    with pytest.raises(WorkerStartError, match="cannot slow worker test-spinner with a cgroup"):
        throttle("cgroup", "test-spinner", spinner.pid, FACTOR, cpu_share=1.0)
