"""Named choices (models, optimizers, data sources, ...) whose implementation is imported only
when chosen: the command line can list and check them without loading TensorFlow."""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class Entry:
    help: str  # what choosing it does, for --help
    target: str = ""  # "module:attribute.path" of the implementation; "" if there is none to load

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))


def names(entries: dict[str, Entry]) -> tuple[str, ...]:
    return tuple(entries)
