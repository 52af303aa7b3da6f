"""Every test, whatever it starts, must leave no worker process behind."""

from collections.abc import Iterator

import psutil
import pytest


# An isolated worker is three processes: `unshare`, the forwarder inside it, and the binary.
_WORKER_PARTS = ("worker_binary", "cluster.isolated_worker", "unshare")


def worker_processes() -> list[psutil.Process]:
    """Live worker processes (binary, forwarder, unshare) descended from this test process."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
            if process.status() != psutil.STATUS_ZOMBIE and any(part in command for part in _WORKER_PARTS):
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
