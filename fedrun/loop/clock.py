"""The run's clocks. Wall time measures the simulator itself; with a system model, a virtual
clock is the time of the simulated federation: it advances by each round's simulated time,
selection asks it which devices are online, and checkpoints keep it so a resumed run goes on
from the same moment."""

import time


class WallClock:
    """Seconds since this session of the run started."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._started

    def since_start(self, monotonic: float) -> float:
        """A `time.monotonic()` reading as seconds since the start."""
        return monotonic - self._started

    def advance(self, seconds: float) -> None:
        """Wall time advances by itself."""


class VirtualClock:
    """Simulated seconds since the run began, across resumes."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = start_s

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
