"""The run's typed configuration: defaults < TOML file < command-line flags, validated once.

`RunConfig` holds one frozen section per TOML table; every field's flag, help, unit, allowed
values and whether it decides the result live in its metadata (`fields`), from which `--help`
(`flags`), the file reader (`files`) and the resume rules are generated.
"""

from fedrun.config.fields import FieldInfo
from fedrun.config.files import config_toml, flag_values, read_config_file, read_grid_file
from fedrun.config.flags import add_config_flags, chosen_flags
from fedrun.config.run_config import BY_FLAG, FIELDS, SECTIONS, RunConfig, resolve
from fedrun.config.sections import (
    DataConfig,
    DispatchConfig,
    EvalConfig,
    ObserveConfig,
    OutputConfig,
    PolicyConfig,
    SystemConfig,
    Workload,
)

__all__ = [
    "BY_FLAG",
    "FIELDS",
    "SECTIONS",
    "DataConfig",
    "DispatchConfig",
    "EvalConfig",
    "FieldInfo",
    "ObserveConfig",
    "OutputConfig",
    "PolicyConfig",
    "SystemConfig",
    "RunConfig",
    "Workload",
    "add_config_flags",
    "chosen_flags",
    "config_toml",
    "flag_values",
    "read_config_file",
    "read_grid_file",
    "resolve",
]
