"""Ctrl-C and SIGTERM as requests, acted on where stopping is safe, with a bound on how long the
stop may take.

A signal handler that raises lets the exception surface anywhere: inside gRPC, TFF's event loop,
a TensorFlow call or a finalizer, where a lock or a C++ frame cannot be trusted to unwind (runs
that swallowed Ctrl-C, hung in gRPC's `__del__` or aborted in C++ were seen). So the handler only
records the request and arms a watchdog; the round loop, the dispatcher's wait loop and start-up
call `check()`, which raises `Interrupted` there, and the normal path unwinds: the round in flight
is abandoned, the last checkpoint kept, the workers stopped. Should a library block that path
anyway, the watchdog ends the process `STOP_BOUND_S` after the signal (the workers die with it:
they carry a parent-death signal). A second signal exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

# The most a stop may take, from the signal to the process's end.
STOP_BOUND_S = 8.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop request reached a safe point. BaseException: no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class StopRequest:
    """The process's stop request: signals are process-wide, so there is one (`STOP`)."""

    def __init__(self) -> None:
        self._signum: int | None = None
        self._watchdog: threading.Timer | None = None

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Takes SIGINT and SIGTERM for the block (in the main thread: Python's signals are
        delivered there), then gives them back as they were."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._watchdog is not None:  # the block ended within the bound
                self._watchdog.cancel()
            self._signum, self._watchdog = None, None

    @property
    def requested(self) -> bool:
        return self._signum is not None

    def check(self) -> None:
        """At a safe point: raises Interrupted if a stop was asked for."""
        if self._signum is not None:
            raise Interrupted(self._signum)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signum is not None:  # a second signal: the user means it
            os._exit(128 + signum)
        self._signum = signum
        self._watchdog = threading.Timer(STOP_BOUND_S, _leave_now, [128 + signum])
        self._watchdog.daemon = True
        self._watchdog.start()


def _leave_now(code: int) -> None:
    print(f"fedrun: the stop took longer than {STOP_BOUND_S:.0f} s; leaving now", file=sys.stderr, flush=True)
    os._exit(code)


def leave(code: int) -> None:
    """Ends the process with `code` once its results are safe, without running finalizers.

    By the time this runs every file is written and fsynced and the workers are stopped; what is
    left are gRPC's and TFF's finalizers, which can block without bound (TFF's default context
    waits on a worker it may never have started), so the process does not wait for them.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


STOP = StopRequest()
