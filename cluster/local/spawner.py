"""Starts child processes that cannot outlive the coordinator, even one killed with SIGKILL.

Each child asks the kernel (PR_SET_PDEATHSIG) for SIGKILL when its parent goes away. The kernel
means the parent *thread*, so every child is started from one long-lived daemon thread rather
than from whichever, possibly short-lived, thread asked for it.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child must not load it

_Request = tuple[list[str], dict[str, Any], concurrent.futures.Future[subprocess.Popen[bytes]]]


class Spawner:
    """Owns the thread that every child is started from."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="fedrun-spawner", daemon=True)
        self._thread.start()

    def popen(self, args: list[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
        """subprocess.Popen(args, **popen_kwargs), run on the spawning thread."""
        if not self._thread.is_alive():
            raise RuntimeError("spawner is closed; create a new one")
        started: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._requests.put((args, popen_kwargs, started))
        return started.result()

    def close(self) -> None:
        """Ends the spawning thread, upon which the kernel kills any child still running."""
        if self._thread.is_alive():
            self._requests.put(None)
            self._thread.join()

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            args, popen_kwargs, started = request
            try:
                process = subprocess.Popen(args, preexec_fn=_die_with_parent(os.getpid()), **popen_kwargs)
            except BaseException as error:  # handed to the caller, which re-raises it
                started.set_exception(error)
            else:
                started.set_result(process)


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def set_parent_death_signal() -> None:
        if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return set_parent_death_signal
