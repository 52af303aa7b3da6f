"""The steps a run's round loop calls, chosen from its configuration: who is selected, who
counts, which clock selection reads, and (with a system model) the simulated devices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedrun.asynchrony.schedule import BufferedSchedule
from fedrun.config import RunConfig
from fedrun.data.keys import TRAIN
from fedrun.loop.clock import VirtualClock, WallClock
from fedrun.selection.cohort import Cohort, evaluation_cohort
from fedrun.selection.policy import DevicePolicy, RoundPolicy, WaitForAll
from fedrun.selection.sampling import sample_clients
from fedrun.selection.selector import AvailableSelector, UniformSelector
from fedrun.system.build import build_system_model
from fedrun.system.models import SystemModel
from fedrun.system.participation import Participation, quartile_bounds

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource

# Devices whose round times set the speed quartiles that participation is counted in.
_SPEED_REFERENCE_CLIENTS = 2000


@dataclass
class RoundSteps:
    selector: UniformSelector
    policy: RoundPolicy
    clock: WallClock | VirtualClock
    system: SystemModel | None = None
    participation: Participation | None = None
    speed_groups: dict[str, Cohort] | None = None  # evaluation groups by device speed quartile
    schedule: BufferedSchedule | None = None  # buffered-async: the clients' schedule on the virtual clock


def round_steps(config: RunConfig, source: ClientDataSource, model_bytes: int) -> RoundSteps:
    seed = config.workload.seed
    system = build_system_model(config, source, model_bytes)
    if system is None:
        return RoundSteps(UniformSelector(source, seed, config.clients_selected), WaitForAll(), WallClock())
    selector = (
        AvailableSelector(source, seed, config.clients_selected, system.available)
        if system.has_availability
        else UniformSelector(source, seed, config.clients_selected)
    )
    policy = DevicePolicy(system, config.policy, config.workload.clients_per_round, seed)
    reference = sample_clients(seed, 0, source.population, min(_SPEED_REFERENCE_CLIENTS, source.population))
    task = int(np.median([source.num_examples(int(c), TRAIN) for c in reference]))

    def device_s(client: int) -> float:  # the device's time for the median client's task
        return system.client_time(client, task).total_s

    bounds = quartile_bounds(np.array([device_s(int(c)) for c in reference]))
    return RoundSteps(
        selector,
        policy,
        VirtualClock(),
        system,
        Participation(source.population, device_s, *bounds),
        speed_groups(device_s, source, seed, config.eval.sample_size),
        buffered_schedule(config, system, selector),
    )


def buffered_schedule(
    config: RunConfig, system: SystemModel, selector: UniformSelector
) -> BufferedSchedule | None:
    """With --aggregation buffered-async, the schedule its server updates follow."""
    aggregation = config.aggregation
    if not aggregation.buffered:
        return None
    return BufferedSchedule(
        system,
        selector.sample,
        selector.cohort,
        buffer_size=aggregation.buffer_size,
        concurrency=aggregation.max_concurrency,
        max_staleness=aggregation.max_staleness,
        dropout=config.policy.dropout,
        seed=config.workload.seed,
    )


def speed_groups(
    device_s: Callable[[int], float], source: ClientDataSource, seed: int, size: int
) -> dict[str, Cohort]:
    """The fixed evaluation sample (eval's 'sample' group) cut into quartiles by device speed:
    speed_q1 the fastest quarter, speed_q4 the slowest."""
    if size < 4:
        return {}
    sample = sample_clients(seed, 0, source.population, min(size, source.population))
    by_speed = sample[np.argsort([device_s(int(c)) for c in sample], kind="stable")]
    return {
        f"speed_q{q + 1}": evaluation_cohort(source, np.sort(part))
        for q, part in enumerate(np.array_split(by_speed, 4))
    }
