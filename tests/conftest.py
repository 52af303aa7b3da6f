"""Every test, whatever it starts, must leave no worker process behind, not even one that was
orphaned (re-parented to init) and so is no longer this process's descendant."""

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

# An isolated worker is three processes: `unshare`, the forwarder inside it, and the binary.
_WORKER_PARTS = ("worker_binary", "cluster.local.isolated_worker", "unshare")
# A process the kernel is already killing (a pid namespace torn down by its parent's death)
# takes a moment to go: that is no leak. One that outlives this grace is.
_EXIT_GRACE_S = 3.0

# Fixtures every backend test may ask for: the contract workload, its algorithm and reference.
pytest_plugins = ("tests.support.backends",)

# Inherited by everything this test session starts, whoever its parent is by now.
_MARKER = "FEDRUN_TEST_SESSION"
os.environ[_MARKER] = uuid.uuid4().hex
# Data conversions of the tests go to a cache of their own, not the user's (removed at the end).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="fedrun-test-cache-")


def _started_by_this_session(process: psutil.Process) -> bool:
    try:
        return process.environ().get(_MARKER) == os.environ[_MARKER]
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False


def worker_processes() -> list[psutil.Process]:
    """Live worker processes (binary, forwarder, unshare) this test session started."""
    found = []
    for process in psutil.process_iter():
        try:
            command = " ".join(process.cmdline())
            if (
                process.status() != psutil.STATUS_ZOMBIE
                and any(part in command for part in _WORKER_PARTS)
                and _started_by_this_session(process)
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _commands(processes: list[psutil.Process]) -> list[list[str]]:
    commands = []
    for process in processes:
        try:
            commands.append(process.cmdline())
        except psutil.NoSuchProcess:
            pass
    return commands


@pytest.fixture(autouse=True)
def no_leftover_workers() -> Iterator[None]:
    yield
    deadline = time.monotonic() + _EXIT_GRACE_S
    while (leftovers := worker_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    described = _commands(leftovers)
    for process in leftovers:  # so one failure does not spill into the next test
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    assert not leftovers, f"worker processes left behind: {described}"


@pytest.fixture(autouse=True, scope="session")
def no_leftover_scratch_folders() -> Iterator[None]:
    """The backend's socket and log folders: those of coordinators the tests SIGKILLed are removed
    by the next backend (or here, at the end), and none of this session's may remain."""
    from cluster.local.backend import LOG_PREFIX, SOCKETS_PREFIX
    from cluster.local.scratch import remove_orphans

    def ours() -> list[Path]:
        found = []
        for folder in (
            p
            for prefix in (SOCKETS_PREFIX, LOG_PREFIX)
            for p in Path(tempfile.gettempdir()).glob(f"{prefix}*")
        ):
            try:
                owner = psutil.Process(int((folder / "owner").read_text().split()[0]))
            except (OSError, ValueError, psutil.Error):
                continue
            if owner.pid == os.getpid() or _started_by_this_session(owner):
                found.append(folder)
        return found

    yield
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)
    for prefix in (SOCKETS_PREFIX, LOG_PREFIX):
        remove_orphans(prefix)
    assert not ours(), f"scratch folders of this session left behind: {ours()}"
