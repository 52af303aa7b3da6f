"""The system model a run's configuration names, built for its data source and model size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fedrun.config import RunConfig
from fedrun.system.models import LognormalModel, ProfileTable, SystemModel, TraceModel
from fedrun.system.profiles import TrainingTask
from fedrun.system.traces import read_availability_trace, read_device_trace, read_profile_csv

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource


def build_system_model(config: RunConfig, source: ClientDataSource, model_bytes: int) -> SystemModel | None:
    """None for `--system-model none`; the trace files are read here, once."""
    system = config.system
    if not system.enabled:
        return None
    task = TrainingTask(config.workload.epochs, config.workload.batch_size, model_kbit=model_bytes * 8 / 1024)
    availability = (
        read_availability_trace(Path(system.availability_trace)) if system.availability_trace else None
    )
    if system.model == "lognormal":
        return LognormalModel(
            task,
            config.workload.seed,
            compute_s_per_example=system.compute_s_per_example,
            compute_sigma=system.compute_sigma,
            bandwidth_kbps=system.bandwidth_kbps,
            bandwidth_sigma=system.bandwidth_sigma,
            rtt_s=system.rtt_s,
            availability=availability,
        )
    if system.model == "fedscale":
        return TraceModel(task, read_device_trace(Path(system.device_trace)), availability)
    rows, names = read_profile_csv(Path(system.device_trace))
    return ProfileTable(
        task, rows, {name: row for row, name in enumerate(names)}, source.client_name, availability
    )
