"""System models: each client's device times and availability, by name (`--system-model`).

- none: no simulated time (a run measures only its own wall time);
- lognormal: seconds per example and bandwidth lognormal across clients (FedScale's and the
  PAPAYA/GFL papers' device-speed model), drawn once per (seed, client);
- fedscale: FedScale's own device-capacity and behaviour traces, with FedScale's formula;
- csv: a file of the user's own with one device per row.
Any of them may add availability from a FedScale behaviour trace (`--availability-trace`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from fedrun.system.profiles import Availability, ClientTime, TrainingTask

# FedScale multiplies the forward-pass latency by 3 for the backward pass (client_metadata.py).
FEDSCALE_AUGMENTATION = 3.0
# FedScale's profile for a client whose trace entry is missing (aggregator.py).
FEDSCALE_DEFAULT_PROFILE = {"computation": 1.0, "communication": 1.0}


class SystemModel(Protocol):
    def client_time(self, client: int, examples: int) -> ClientTime:
        """The client's simulated round when it holds `examples` training examples."""

    def available(self, client: int, t: float) -> bool:
        """Whether the client's device can take part at simulated time `t`."""

    @property
    def has_availability(self) -> bool: ...


def speed_latent(seed: int, client: int, stream: str = "compute") -> float:
    """A standard-normal number per (seed, client, stream): a device's place among devices."""
    stream_id = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return float(np.random.default_rng([seed, client, stream_id]).standard_normal())


class _Availabilities:
    """Each client's availability from a FedScale behaviour trace, or always available."""

    def __init__(self, traces: list[Availability] | None):
        self._traces = traces

    @property
    def has_availability(self) -> bool:
        return self._traces is not None

    def available(self, client: int, t: float) -> bool:
        if self._traces is None:
            return True
        return fedscale_entry(self._traces, client).available_at(t)


class LognormalModel(_Availabilities):
    def __init__(
        self,
        task: TrainingTask,
        seed: int,
        *,
        compute_s_per_example: float,
        compute_sigma: float,
        bandwidth_kbps: float,
        bandwidth_sigma: float,
        rtt_s: float,
        availability: list[Availability] | None = None,
    ):
        super().__init__(availability)
        self._task = task
        self._seed = seed
        self._compute = (compute_s_per_example, compute_sigma)
        self._bandwidth = (bandwidth_kbps, bandwidth_sigma)
        self._rtt_s = rtt_s

    def seconds_per_example(self, client: int) -> float:
        median, sigma = self._compute
        return median * math.exp(sigma * speed_latent(self._seed, client, "compute"))

    def bandwidth_kbps(self, client: int) -> float:
        median, sigma = self._bandwidth
        return median * math.exp(sigma * speed_latent(self._seed, client, "bandwidth"))

    def client_time(self, client: int, examples: int) -> ClientTime:
        transfer = self._rtt_s + self._task.model_kbit / self.bandwidth_kbps(client)
        compute = self.seconds_per_example(client) * examples * self._task.epochs
        return ClientTime(download_s=transfer, compute_s=compute, upload_s=transfer)


class TraceModel(_Availabilities):
    """Device capacities from a FedScale trace `{id: {'computation': ms per sample,
    'communication': kbps}}`, timed with FedScale's `get_completion_time`."""

    def __init__(
        self,
        task: TrainingTask,
        profiles: Mapping[int, Mapping[str, float]],
        availability: list[Availability] | None = None,
    ):
        super().__init__(availability)
        self._task = task
        self._profiles = profiles

    def client_time(self, client: int, examples: int) -> ClientTime:
        profile = fedscale_profile(self._profiles, client)
        steps = self._task.local_steps(examples)
        compute = (
            FEDSCALE_AUGMENTATION * self._task.batch_size * steps * float(profile["computation"]) / 1000.0
        )
        transfer = self._task.model_kbit / float(profile["communication"])
        return ClientTime(download_s=transfer, compute_s=compute, upload_s=transfer)


class ProfileTable(_Availabilities):
    """Devices from a table of the user's own (the csv model): one row per device."""

    def __init__(
        self,
        task: TrainingTask,
        rows: list[dict[str, float]],
        row_of_name: Mapping[str, int],
        name_of: Callable[[int], str],
        availability: list[Availability] | None = None,
    ):
        super().__init__(availability)
        self._task = task
        self._rows = rows
        self._row_of_name = row_of_name  # the clients the file names
        self._name_of = name_of

    def row(self, client: int) -> dict[str, float]:
        """The row naming the client; other clients take the rows in turn (index mod rows)."""
        return self._rows[self._row_of_name.get(self._name_of(client), client % len(self._rows))]

    def client_time(self, client: int, examples: int) -> ClientTime:
        row = self.row(client)
        rtt = row.get("rtt_s", 0.0)
        return ClientTime(
            download_s=rtt + self._task.model_kbit / row["download_kbps"],
            compute_s=row["compute_s_per_example"] * examples * self._task.epochs,
            upload_s=rtt + self._task.model_kbit / row["upload_kbps"],
        )


def fedscale_profile(profiles: Mapping[int, Mapping[str, float]], client: int) -> Mapping[str, float]:
    """FedScale's mapping of its clients onto a device trace: client ids start at 1 and client k
    takes entry `k % len(trace)` (entry 0 being absent, that client gets FedScale's default)."""
    if not profiles:
        return FEDSCALE_DEFAULT_PROFILE
    return profiles.get((client + 1) % len(profiles), FEDSCALE_DEFAULT_PROFILE)


def fedscale_entry(traces: list[Availability], client: int) -> Availability:
    """FedScale's mapping onto a behaviour trace: client k takes the `k % len`-th entry in the
    trace's key order (ClientManager.register_client)."""
    return traces[(client + 1) % len(traces)]
