"""The whole run's configuration: one frozen section per TOML table, checked once at the edge."""

from __future__ import annotations

import dataclasses
from typing import Any

from cluster import ClusterSettings, RaySettings, WorkerError, WorkerSettings, backend_options
from fedrun.config.fields import FieldInfo, check_choices, section_fields
from fedrun.config.sections import (
    AggregationConfig,
    DataConfig,
    DispatchConfig,
    EvalConfig,
    ObserveConfig,
    OutputConfig,
    PolicyConfig,
    SystemConfig,
    Workload,
)
from fedrun.errors import FedrunError


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result and how it is executed.

    Sections are TOML tables of the same name; each field's flag is in its metadata.
    """

    workload: Workload = Workload()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    workers: WorkerSettings = WorkerSettings()
    dispatch: DispatchConfig = DispatchConfig()
    ray: RaySettings = RaySettings()
    system: SystemConfig = SystemConfig()
    policy: PolicyConfig = PolicyConfig()
    aggregation: AggregationConfig = AggregationConfig()
    observe: ObserveConfig = ObserveConfig()
    output: OutputConfig = OutputConfig()

    def __post_init__(self) -> None:
        for info in FIELDS:
            check_choices(info, self.value(info))
        workload, data = self.workload, self.data
        if data.source == "synthetic" and self.clients_selected > data.population:
            raise ValueError(
                f"clients_per_round ({workload.clients_per_round}) exceeds the population "
                f"({data.population}): lower --clients-per-round or raise --population"
                + (" (or --over-selection)" if self.clients_selected > workload.clients_per_round else "")
            )
        if self.policy.any and not self.system.enabled:
            raise ValueError(
                "--over-selection, --deadline-s, --dropout and --min-reporting decide on "
                "simulated client times: choose a --system-model (e.g. lognormal)"
            )
        if self.system.speed_data_skew and data.source != "synthetic":
            raise ValueError("--speed-data-skew shapes the synthetic writers' data: use --data synthetic")
        if self.policy.min_reporting > workload.clients_per_round:
            raise ValueError(
                f"min_reporting ({self.policy.min_reporting}) exceeds clients_per_round "
                f"({workload.clients_per_round}): no round could ever be kept"
            )
        self._check_aggregation()
        try:
            backend_options(self.cluster)  # the chosen backend checks its own options
        except WorkerError as error:
            raise ValueError(str(error)) from None

    def _check_aggregation(self) -> None:
        aggregation = self.aggregation
        if not aggregation.buffered:
            return
        if not self.system.enabled:
            raise ValueError(
                "--aggregation buffered-async runs its clients on the virtual clock: choose a "
                "--system-model (e.g. lognormal)"
            )
        if self.policy.over_selection > 1 or self.policy.deadline_s or self.policy.min_reporting:
            raise ValueError(
                "--over-selection, --deadline-s and --min-reporting close synchronous rounds; "
                "buffered-async has no rounds to close (its counterpart is --max-staleness): drop them"
            )
        if self.dispatch.shard_sizing != "equal":
            raise ValueError("--shard-sizing speed sizes synchronous rounds: use equal with buffered-async")
        if self.data.source == "synthetic" and aggregation.max_concurrency > self.data.population:
            raise ValueError(
                f"max_concurrency ({aggregation.max_concurrency}) exceeds the population "
                f"({self.data.population}): lower --max-concurrency or raise --population"
            )

    @property
    def cluster(self) -> ClusterSettings:
        return ClusterSettings(workers=self.workers, ray=self.ray)

    @property
    def clients_selected(self) -> int:
        """Clients selected per round: clients_per_round, or more with over-selection."""
        return self.policy.selected(self.workload.clients_per_round)

    @property
    def num_shards(self) -> int:
        return self.dispatch.shards or self.workers.count

    def value(self, info: FieldInfo) -> Any:
        return getattr(getattr(self, info.section), info.name)

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with some fields of some sections changed: replace(workload={"rounds": 3})."""
        return dataclasses.replace(
            self,
            **{name: dataclasses.replace(getattr(self, name), **fields) for name, fields in sections.items()},
        )

    def result_differences(self, other: RunConfig) -> list[FieldInfo]:
        """The fields that decide the result and differ (what `--resume` may not change)."""
        return [info for info in FIELDS if info.decides_result and self.value(info) != other.value(info)]

    def as_tables(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


def resolve(*layers: dict[str, dict[str, Any]]) -> RunConfig:
    """Defaults, then each layer in turn (a file, then flags), as {section: {field: value}}; an
    invalid value of any kind becomes a FedrunError that says what to change."""
    tables: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            tables[section].update(values)
    try:
        return RunConfig(**{name: SECTIONS[name](**values) for name, values in tables.items()})
    except ValueError as error:
        raise FedrunError(f"invalid configuration: {error}") from None


SECTIONS: dict[str, type] = {field.name: type(field.default) for field in dataclasses.fields(RunConfig)}
FIELDS: list[FieldInfo] = [
    info for name, section in SECTIONS.items() for info in section_fields(name, section)
]
BY_FLAG: dict[str, FieldInfo] = {info.flag: info for info in FIELDS}
