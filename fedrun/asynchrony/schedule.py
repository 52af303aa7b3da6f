"""FedBuff's schedule on the virtual clock: which clients train when, from which server version,
and which results each server update takes. A pure, seeded function of the configuration: the
times come from the system model, never from the workers, so the schedule is the same on every
backend and worker count, and it is known before any client trains.

C clients are in flight. When one finishes, its result enters the buffer (unless it was lost, or
is more than `max_staleness` versions old) and its slot is refilled; every B buffered results the
server applies an update and the version rises. Results and updates at one instant are handled
before that instant's new clients start, so with equal client times and B = C = K each update is
exactly a synchronous round (same clients, same shuffle seeds, same starting model).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrun.errors import FedrunError
from fedrun.selection.cohort import Cohort
from fedrun.selection.sampling import round_rng
from fedrun.system.profiles import ClientTime

if TYPE_CHECKING:
    from fedrun.system.models import SystemModel

# With no client online and none in flight, the clock moves on by this much and tries again.
IDLE_RETRY_S = 60.0
_MAX_IDLE_RETRIES = 10_080  # a simulated week
_MAX_LOST_PER_SLOT = 100


@dataclass(frozen=True)
class Flight:
    """One client's training from one server version."""

    seq: int  # start order over the run
    client: int
    key: str  # the workers' key of its training data (with its shuffle seed)
    examples: int
    version: int  # the server version it trains from
    start_s: float
    time: ClientTime
    lost: str | None = None  # why it never reports ("dropout", "unavailable"), if it does not

    @property
    def finish_s(self) -> float:
        return self.start_s + self.time.total_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Flight:
        return cls(**{**raw, "time": ClientTime(**raw["time"])})


@dataclass(frozen=True)
class ServerUpdate:
    """One server update: the buffered results it applies and what happened since the last."""

    version: int  # the version it makes (1 for the first)
    clock_s: float  # simulated time it is applied
    since_s: float  # simulated time since the previous update (or the start)
    results: tuple[Flight, ...]  # ordered by start version, then arrival
    discarded: tuple[tuple[Flight, str], ...]  # arrived since the last update and did not count
    started: int  # clients started since the last update
    in_flight: int  # clients training when it is applied

    def staleness(self, flight: Flight) -> int:
        return self.staleness_from(flight.version)

    def staleness_from(self, version: int) -> int:
        """Versions applied since `version`, when this update applies a result trained from it."""
        return self.version - 1 - version

    @property
    def cohort(self) -> Cohort:
        return Cohort(
            np.array([f.client for f in self.results], dtype=np.int64),
            [f.examples for f in self.results],
            [f.key for f in self.results],
        )

    def groups(self) -> list[tuple[int, tuple[int, ...]]]:
        """(start version, positions in `results`) for each version the results trained from."""
        groups: dict[int, list[int]] = {}
        for position, flight in enumerate(self.results):
            groups.setdefault(flight.version, []).append(position)
        return [(version, tuple(positions)) for version, positions in groups.items()]


Sample = Callable[[int, float, int], np.ndarray]  # (start batch, now, count) -> candidate clients, in order
Describe = Callable[[int, np.ndarray], Cohort]  # (start batch, clients) -> their sizes and keys


class BufferedSchedule:
    def __init__(
        self,
        system: SystemModel,
        sample: Sample,
        describe: Describe,
        *,
        buffer_size: int,
        concurrency: int,
        max_staleness: int,
        dropout: float,
        seed: int,
    ):
        self._system = system
        self._sample = sample
        self._describe = describe
        self._buffer_size = buffer_size
        self._max_staleness = max_staleness
        self._dropout = dropout
        self._seed = seed
        self.now = 0.0
        self.version = 0
        self._last_update_s = 0.0
        self._batches = 0
        self._seq = 0
        self._free = concurrency  # slots to fill at `now`
        self._blocked_at_s = -math.inf  # when a start last left slots empty (too few clients online)
        # Results that may fail to count between two updates before the run is judged stuck.
        self._max_lost = _MAX_LOST_PER_SLOT * concurrency
        self._in_flight: list[tuple[float, int, Flight]] = []  # a heap by (finish, seq)
        self._buffer: list[Flight] = []

    def next_update(self) -> ServerUpdate:
        """Runs the virtual clock to the next server update."""
        discarded: list[tuple[Flight, str]] = []
        started = 0
        idle = 0  # looks for clients to start that found none, in a row
        while len(self._buffer) < self._buffer_size:
            finishing = self._in_flight[0][2] if self._in_flight else None
            arriving_now = finishing is not None and finishing.finish_s <= self.now
            if not arriving_now and self._free and self._blocked_at_s != self.now:
                begun = self._start(self._free)
                started += begun
                idle = 0 if begun else idle + 1
                continue
            blocked = self._free and self._blocked_at_s == self.now
            if blocked and (finishing is None or finishing.finish_s > self.now + IDLE_RETRY_S):
                # slots left empty (too few clients online): look again a little later
                if finishing is None and idle > _MAX_IDLE_RETRIES:
                    raise FedrunError(
                        f"no client could start for {idle * IDLE_RETRY_S / 3600:.0f} simulated hours "
                        f"after {self.now:.0f} s (none available): check --availability-trace"
                    )
                self.now += IDLE_RETRY_S
                continue
            heapq.heappop(self._in_flight)
            self.now = finishing.finish_s
            self._free += 1
            reason = finishing.lost
            if (
                reason is None
                and self._max_staleness
                and self.version - finishing.version > self._max_staleness
            ):
                reason = "stale"
            if reason is None:
                self._buffer.append(finishing)
                continue
            discarded.append((finishing, reason))
            if len(discarded) > self._max_lost:
                raise FedrunError(
                    f"{len(discarded)} results in a row did not count by {self.now:.0f} simulated s "
                    f"(by reason: {dict(Counter(r for _, r in discarded))}): no server update can fill its "
                    f"buffer; lower --dropout, raise --max-staleness or check --availability-trace"
                )
        results, self._buffer = self._buffer, []
        self.version += 1
        since, self._last_update_s = self.now - self._last_update_s, self.now
        return ServerUpdate(
            version=self.version,
            clock_s=self.now,
            since_s=since,
            results=tuple(sorted(results, key=lambda f: f.version)),  # stable: arrival within a version
            discarded=tuple(discarded),
            started=started,
            in_flight=len(self._in_flight),
        )

    def versions_in_use(self) -> set[int]:
        """Server versions that a client in flight which will report, or a buffered result, trained from."""
        return {flight.version for _, _, flight in self._in_flight if flight.lost is None} | {
            f.version for f in self._buffer
        }

    def _start(self, count: int) -> int:
        """Starts up to `count` clients now from the current version; returns how many started."""
        self._batches += 1
        batch = self._batches
        busy = {flight.client for _, _, flight in self._in_flight}
        candidates = self._sample(batch, self.now, count + len(busy))
        cohort = self._describe(
            batch, np.array([c for c in candidates.tolist() if c not in busy][:count], np.int64)
        )
        fails = round_rng(self._seed, batch, "dropout").random(len(cohort.clients)) < self._dropout
        for position, failed in enumerate(fails):
            client, examples = int(cohort.clients[position]), cohort.sizes[position]
            time = self._system.client_time(client, examples)
            lost = "dropout" if failed else None
            if lost is None and self._system.has_availability:
                if not self._system.available(client, self.now + time.total_s):
                    lost = "unavailable"
            flight = Flight(
                self._seq,
                client,
                cohort.keys[position],
                examples,
                self.version,
                self.now,
                time,
                lost,
            )
            heapq.heappush(self._in_flight, (flight.finish_s, flight.seq, flight))
            self._seq += 1
        self._free -= len(cohort.clients)
        self._blocked_at_s = self.now if self._free else -math.inf
        return len(cohort.clients)

    def state(self) -> dict[str, Any]:
        """Everything the schedule holds, as JSON, for an exact resume."""
        return {
            "now": self.now,
            "version": self.version,
            "last_update_s": self._last_update_s,
            "batches": self._batches,
            "seq": self._seq,
            "free": self._free,
            "blocked_at_s": self._blocked_at_s if self._free else None,
            "in_flight": [flight.to_json() for _, _, flight in sorted(self._in_flight)],
            "buffer": [flight.to_json() for flight in self._buffer],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.now, self.version = float(state["now"]), int(state["version"])
        self._last_update_s = float(state["last_update_s"])
        self._batches, self._seq, self._free = int(state["batches"]), int(state["seq"]), int(state["free"])
        blocked = state["blocked_at_s"]
        self._blocked_at_s = -math.inf if blocked is None else float(blocked)
        flights = [Flight.from_json(raw) for raw in state["in_flight"]]
        self._in_flight = [(f.finish_s, f.seq, f) for f in flights]
        heapq.heapify(self._in_flight)
        self._buffer = [Flight.from_json(raw) for raw in state["buffer"]]
