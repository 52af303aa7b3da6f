"""Configuration fields and what they say about themselves: flag, help, unit, allowed values,
and whether a field decides the run's result (and so must not change on `--resume`).

Every section is a frozen dataclass whose fields are made with `option` (or, for the worker
sections that `cluster` owns, with `cluster.settings.setting`, which this extends). `--help`,
the TOML reader and the resume rules are all generated from this metadata.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from cluster import setting


def option(default: Any, help: str, *, decides_result: bool = False, **kwargs: Any) -> Any:
    """A field of one of fedrun's own sections; see `cluster.settings.setting` for `kwargs`."""
    return setting(default, help, decides_result=decides_result, **kwargs)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One configuration field, as the command line and TOML files know it."""

    section: str  # TOML table, e.g. "workload"
    name: str  # key inside the table, e.g. "rounds"
    type: type  # int, float, bool, str or Path
    default: Any
    flag: str  # command-line name without dashes; with underscores, also the old flat TOML key
    help: str
    unit: str | None
    decides_result: bool
    _choices: Any

    @property
    def key(self) -> str:
        """The name error messages use: the flag's, with underscores (as old flat files had it)."""
        return self.flag.replace("-", "_")

    @property
    def choices(self) -> tuple[str, ...] | None:
        return self._choices() if callable(self._choices) else self._choices

    def describe(self) -> str:
        """The field's --help text: what it does, its unit, default and allowed values."""
        text = self.help + (f" ({self.unit})" if self.unit else "")
        default = self.default if self.default != "" else '""'
        text += f"; default: {default}"
        if self.choices:
            text += f"; one of: {', '.join(self.choices)}"
        return text


def section_fields(section_name: str, section_type: type) -> list[FieldInfo]:
    hints = typing.get_type_hints(section_type)
    infos = []
    for field in dataclasses.fields(section_type):
        meta = field.metadata
        infos.append(
            FieldInfo(
                section=section_name,
                name=field.name,
                type=_plain(hints[field.name]),
                default=field.default,
                flag=meta.get("flag") or field.name.replace("_", "-"),
                help=meta["help"],
                unit=meta.get("unit"),
                decides_result=meta.get("decides_result", False),
                _choices=meta.get("choices"),
            )
        )
    return infos


def coerce(info: FieldInfo, value: Any, origin: str) -> Any:
    """`value` as the field's type; a FedrunError-worthy ValueError otherwise (no silent casts)."""
    kind = info.type
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, (str, Path))
        value = kind(value) if ok else value
    if not ok:
        raise ValueError(f"{origin}: '{info.key}' must be {kind.__name__}, got {value!r}")
    return value


def check_choices(info: FieldInfo, value: Any) -> None:
    choices = info.choices
    if choices and value not in choices:
        raise ValueError(f"{info.key} must be one of {', '.join(choices)}, got {value!r}")


def _plain(hint: Any) -> type:
    if isinstance(hint, types.UnionType):  # X | None
        return next(t for t in typing.get_args(hint) if t is not type(None))
    return hint
