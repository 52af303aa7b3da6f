"""A sweep's cells: every combination of the grid's values, each an ordinary run configuration
(base file < flags < the cell's values), in a folder named for its values. Pure."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrun.config import FieldInfo, RunConfig, flag_values, resolve
from fedrun.errors import FedrunError

CELLS = "cells"  # DIR/cells/<index>-<values>: one run folder per cell


@dataclass(frozen=True)
class Cell:
    index: int  # 0-based, in grid order (the last option varies fastest)
    values: tuple[tuple[FieldInfo, Any], ...]  # the grid's options and this cell's value of each

    @property
    def options(self) -> dict[str, Any]:
        """The cell's values by option key (the flag's name with underscores)."""
        return {info.key: value for info, value in self.values}

    @property
    def name(self) -> str:
        """`003-over_selection=1.3,seed=1`, safe as a folder name."""
        text = ",".join(f"{info.key}={_short(value)}" for info, value in self.values)
        return f"{self.index:03d}-{re.sub(r'[^A-Za-z0-9_.,=+-]', '_', text)}"

    def without(self, key: str) -> tuple[tuple[str, Any], ...]:
        """The cell's values but one (e.g. the seed): what the cells of one combination share."""
        return tuple((info.key, value) for info, value in self.values if info.key != key)


def _short(value: Any) -> str:
    if isinstance(value, Path):
        return value.name
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid_cells(grid: list[tuple[FieldInfo, list[Any]]]) -> list[Cell]:
    """Every combination of the grid's values, in order (TOML keeps each option to one line)."""
    combinations = itertools.product(*(values for _, values in grid))
    return [
        Cell(index, tuple(zip((info for info, _ in grid), combination)))
        for index, combination in enumerate(combinations)
    ]


def cell_config(base: dict[str, dict[str, Any]], flags: dict[str, Any], cell: Cell, out: Path) -> RunConfig:
    """The cell's run: the base file's values, then the flags, then the cell's; its own folder."""
    varied = {info.flag for info, _ in cell.values}
    if "out" in varied:
        raise FedrunError("the grid cannot vary out: each cell's folder is DIR/cells/<its values>")
    clash = sorted(set(flags) & varied)
    if clash:
        raise FedrunError(
            f"{', '.join('--' + flag for flag in clash)} {'is' if len(clash) == 1 else 'are'} varied by "
            f"the grid: drop the flag or the grid's line"
        )
    values = flag_values({**flags, **{info.flag: value for info, value in cell.values}})
    values.setdefault("output", {})["dir"] = out / CELLS / cell.name
    try:
        return resolve(base, values)
    except FedrunError as error:
        raise FedrunError(f"cell {cell.name}: {error}") from None
