"""Data sources by name, or an .npz path; a source's module loads only when it is opened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedrun.errors import FedrunError
from fedrun.registry import Entry

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource


@dataclass(frozen=True)
class SourceOptions:
    """What the run's configuration tells a source."""

    data: str = "synthetic"  # a registered name, or a path to an .npz file
    data_dir: str = ""  # where file-backed sources look; "" = their usual place
    test_data: str = ""  # separate test examples for an .npz source
    population: int = 3383  # training clients of a generated source (files decide their own)
    heldout: int = 0  # clients that never train, only evaluate; -1: the source's default
    speed_data_skew: float = 0.0  # synthetic: writers' digit mix follows device speed (see [system])
    seed: int = 0  # the run's seed: device speeds and partitions are drawn from it
    cache_dir: str = ""  # where converted files go; "" = the user's cache folder
    feature_scale: str = "auto"  # files: "auto", "none" or a factor
    partition: str = ""  # files: split centralized data into clients ("iid:N", ...)


SOURCES = {
    "synthetic": Entry(
        "embedded stand-in for federated EMNIST digits, generated per writer",
        "fedrun.data.synthetic:open_synthetic",
    ),
    "emnist": Entry(
        "TFF's federated EMNIST digits, from a local copy", "fedrun.data.files.emnist:open_digits"
    ),
    "emnist-full": Entry(
        "TFF's federated EMNIST digits and letters, from a local copy", "fedrun.data.files.emnist:open_full"
    ),
}
_FILE_SOURCE = Entry("your own .npz file", "fedrun.data.files.npz:open_npz")


def source_entry(data: str) -> Entry:
    """The source `--data` names: a registered name or a path ending in .npz."""
    if data.endswith(".npz"):
        return _FILE_SOURCE
    if data in SOURCES:
        return SOURCES[data]
    raise FedrunError(
        f"unknown data source '{data}': choose one of {', '.join(SOURCES)} or give the path of an .npz file"
    )


def create_source(options: SourceOptions) -> ClientDataSource:
    return source_entry(options.data).load()(options)
