"""Every test, whatever it starts, must leave no worker process behind."""

from collections.abc import Iterator

import psutil
import pytest


def worker_processes() -> list[psutil.Process]:
    """Live worker_binary processes descended from this test process."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and "worker_binary" in " ".join(process.cmdline()):
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
