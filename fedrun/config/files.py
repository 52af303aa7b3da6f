"""Configuration files: TOML with one table per section, as `config.toml` is written.

Files of the older flat form (every key at the top level, named as its flag) are read as they
were; a file that mixes the two forms is refused with the new form of its keys.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from fedrun.config.fields import FieldInfo, coerce
from fedrun.config.run_config import BY_FLAG, FIELDS, SECTIONS, RunConfig
from fedrun.errors import FedrunError

_BY_KEY = {info.key: info for info in FIELDS}
_BY_PLACE = {(info.section, info.name): info for info in FIELDS}


def read_config_file(path: Path) -> dict[str, dict[str, Any]]:
    """A config file's values by section; unknown keys and wrong types are errors."""
    origin = f"config file {path}"
    values: dict[str, dict[str, Any]] = {}
    for info, value in _placed(_toml(path, "config file", "--config"), origin):
        try:
            values.setdefault(info.section, {})[info.name] = coerce(info, value, origin)
        except ValueError as e:
            raise FedrunError(str(e)) from None
    return values


def read_grid_file(path: Path) -> list[tuple[FieldInfo, list[Any]]]:
    """A sweep's grid: each option it varies (keys as in a config file) with its list of values,
    in the file's order; unknown keys, values that are not a non-empty list and wrong types are
    errors."""
    origin = f"grid file {path}"
    grid = []
    for info, values in _placed(_toml(path, "grid file", "--grid"), origin):
        if not isinstance(values, list) or not values:
            raise FedrunError(
                f"{origin}: {info.key} must list the values to try, e.g. {info.key} = "
                f"[{info.default!r}]; got {values!r}"
            )
        try:
            grid.append((info, [coerce(info, value, origin) for value in values]))
        except ValueError as e:
            raise FedrunError(str(e)) from None
    return grid


def _toml(path: Path, what: str, flag: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FedrunError(f"{what} {path} does not exist: check the {flag} path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FedrunError(f"{what} {path} is not valid TOML ({e}): fix the file") from None


def _placed(raw: dict[str, Any], origin: str) -> list[tuple[FieldInfo, Any]]:
    """Each key of a file (flat, or in tables named for the sections) with the field it names."""
    tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    flat = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    if tables and flat:
        raise FedrunError(
            f"{origin} mixes top-level keys ({', '.join(flat)}) with tables; put each "
            f"key in its table, e.g.\n{_new_form(flat, origin)}"
        )
    if flat:
        return [(_flat_field(key, origin), value) for key, value in flat.items()]
    return [
        (_table_field(table, key, origin), value)
        for table, values in tables.items()
        for key, value in values.items()
    ]


def config_toml(config: RunConfig) -> str:
    """The resolved configuration as a file `--config` reads back to the same RunConfig."""
    return tomli_w.dumps(
        {
            name: {k: str(v) if isinstance(v, Path) else v for k, v in table.items()}
            for name, table in config.as_tables().items()
        }
    )


def flag_values(flags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Parsed command-line values, by flag name, as {section: {field: value}}."""
    values: dict[str, dict[str, Any]] = {}
    for flag, value in flags.items():
        info = BY_FLAG[flag]
        try:
            values.setdefault(info.section, {})[info.name] = coerce(info, value, f"--{flag}")
        except ValueError as e:
            raise FedrunError(str(e)) from None
    return values


def _flat_field(key: str, origin: str) -> FieldInfo:
    if key not in _BY_KEY:
        raise FedrunError(
            f"{origin}: unknown key {key!r}{_suggestion(key, _BY_KEY)}; valid keys are "
            f"listed by `fedrun run --help`"
        )
    return _BY_KEY[key]


def _table_field(table: str, key: str, origin: str) -> FieldInfo:
    if table not in SECTIONS:
        raise FedrunError(
            f"{origin}: unknown table [{table}]{_suggestion(table, SECTIONS)}; tables are "
            f"{', '.join(f'[{name}]' for name in SECTIONS)}"
        )
    info = _BY_PLACE.get((table, key))
    if info is None:
        known = [name for section, name in _BY_PLACE if section == table]
        elsewhere = _BY_KEY.get(key) or next((i for i in FIELDS if i.name == key), None)
        hint = (
            f"; it belongs in [{elsewhere.section}] as {elsewhere.name}"
            if elsewhere
            else _suggestion(key, known)
        )
        raise FedrunError(
            f"{origin}: unknown key {key!r} in [{table}]{hint}; [{table}] has {', '.join(known)}"
        )
    return info


def _suggestion(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _new_form(flat: dict[str, Any], origin: str) -> str:
    lines = []
    for key, value in flat.items():
        info = _flat_field(key, origin)
        lines.append(f"[{info.section}] {info.name} = {tomli_w.dumps({'v': value})[4:].strip()}")
    return "\n".join(lines)
