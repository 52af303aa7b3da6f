"""What the system model knows about one client's device, and how long its round takes."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Availability:
    """When a device can take part: in an active interval of its (repeating) behaviour trace, as
    FedScale's `ClientMetadata.is_active` reads its traces."""

    active: tuple[float, ...]  # interval starts, seconds into the period
    inactive: tuple[float, ...]  # interval ends
    period_s: float  # FedScale's `finish_time`: the trace repeats after it

    def available_at(self, t: float) -> bool:
        moment = t % self.period_s if self.period_s > 0 else t
        return any(start <= moment <= end for start, end in zip(self.active, self.inactive))


@dataclass(frozen=True)
class ClientTime:
    """One client's simulated round, in seconds."""

    download_s: float
    compute_s: float
    upload_s: float

    @property
    def total_s(self) -> float:
        return self.download_s + self.compute_s + self.upload_s


@dataclass(frozen=True)
class TrainingTask:
    """What a round asks of each client's device, fixed for a run."""

    epochs: int
    batch_size: int
    model_kbit: float  # the serialized model weights, in FedScale's kbit (1024 bits)

    def local_steps(self, examples: int) -> int:
        """Batches a client with `examples` examples trains in a round."""
        return math.ceil(examples / self.batch_size) * self.epochs
