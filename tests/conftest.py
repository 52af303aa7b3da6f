"""Every test, whatever it starts, must leave no worker process behind, not even one that was
orphaned (re-parented to init) and so is no longer this process's descendant."""

import os
import uuid
from collections.abc import Iterator

import psutil
import pytest

# An isolated worker is three processes: `unshare`, the forwarder inside it, and the binary.
_WORKER_PARTS = ("worker_binary", "cluster.isolated_worker", "unshare")

# Inherited by everything this test session starts, whoever its parent is by now.
_MARKER = "FEDRUN_TEST_SESSION"
os.environ[_MARKER] = uuid.uuid4().hex


def _started_by_this_session(process: psutil.Process) -> bool:
    try:
        return process.environ().get(_MARKER) == os.environ[_MARKER]
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return False


def worker_processes() -> list[psutil.Process]:
    """Live worker processes (binary, forwarder, unshare) this test session started."""
    found = []
    for process in psutil.process_iter():
        try:
            command = " ".join(process.cmdline())
            if (process.status() != psutil.STATUS_ZOMBIE and any(part in command for part in _WORKER_PARTS)
                    and _started_by_this_session(process)):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(autouse=True)
def no_leftover_workers() -> Iterator[None]:
    yield
    leftovers = worker_processes()
    for process in leftovers:  # so one failure does not spill into the next test
        process.kill()
    assert not leftovers, f"worker processes left behind: {[p.cmdline() for p in leftovers]}"
