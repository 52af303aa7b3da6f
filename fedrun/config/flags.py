"""Command-line flags generated from the configuration's field metadata, grouped by section."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from fedrun.config.fields import FieldInfo
from fedrun.config.run_config import FIELDS, SECTIONS


def add_config_flags(parser: argparse.ArgumentParser, only: Iterable[str] | None = None) -> None:
    """One flag per configuration field (or per field whose flag is in `only`), in one argument
    group per section; values left unset do not appear in the parsed namespace."""
    wanted = None if only is None else set(only)
    for section, section_type in SECTIONS.items():
        infos = [
            info for info in FIELDS if info.section == section and (wanted is None or info.flag in wanted)
        ]
        if not infos:
            continue
        group = parser.add_argument_group(
            f"[{section}]", (section_type.__doc__ or "").split(":", 1)[-1].strip()
        )
        for info in infos:
            _add_flag(group, info)


def chosen_flags(args: argparse.Namespace) -> dict[str, object]:
    """The configuration flags given on the command line, by flag name."""
    return {info.flag: getattr(args, _dest(info)) for info in FIELDS if hasattr(args, _dest(info))}


def _add_flag(group: argparse._ArgumentGroup, info: FieldInfo) -> None:
    text = info.describe().replace("%", "%%")
    if info.type is bool:
        group.add_argument(
            f"--{info.flag}",
            dest=_dest(info),
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=text,
        )
        return
    if info.choices:
        metavar = "{" + ",".join(info.choices) + "}"
    else:
        metavar = "PATH" if info.unit == "path" else info.type.__name__.upper()
    group.add_argument(
        f"--{info.flag}",
        dest=_dest(info),
        type=info.type,
        default=argparse.SUPPRESS,
        metavar=metavar,
        help=text,
    )


def _dest(info: FieldInfo) -> str:
    return info.key
