"""The run's clock, which the select step asks for "now": wall time for a run without a system
model (a virtual clock, advanced by each round's simulated time, comes with one)."""

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
