"""Run configurations written as the flat option names a user types (rounds=3, workers=2)."""

from typing import Any

from fedrun.config import RunConfig, flag_values, resolve


def flat_config(base: RunConfig | None = None, **options: Any) -> RunConfig:
    """`base` (default: the defaults) with options given by flag name, underscores for dashes."""
    flags = flag_values({name.replace("_", "-"): value for name, value in options.items()})
    return resolve(base.as_tables() if base else {}, flags)
