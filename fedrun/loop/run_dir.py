"""What a run leaves in its output directory, and the one reader and writer of each file:
config.toml, rounds.jsonl, model_weights.npz (checkpoint.npz: loop.checkpoint)."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrun.atomic_write import write_bytes_atomically
from fedrun.config import RunConfig, config_toml
from fedrun.errors import FedrunError
from fedrun.loop.checkpoint import CHECKPOINT
from fedrun.loop.records import RoundRecord

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource

_LOG = logging.getLogger(__name__)
ROUNDS = "rounds.jsonl"
CLIENTS = "clients.jsonl"
WORKERS = "workers"  # the logs of the workers fedrun starts
REPORT = "report"
LABEL_MIX = "label_mix.json"  # a few training clients' label counts
PARTITION = "partition.npz"  # with --partition: the client of each of the file's examples
TENSORBOARD = "tb"
CONFIG = "config.toml"
WEIGHTS = "model_weights.npz"


class JsonLines:
    """A file of one JSON object per line, each with a "round", appended durably round by round."""

    kind = "record"  # what a line holds, for error messages

    def __init__(self, path: Path):
        self.path = path

    def append_all(self, objects: Iterable[dict[str, Any]]) -> None:
        """One write and one fsync for a round's lines."""
        text = "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objects)
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def keep_up_to(self, last_round: int) -> None:
        """On resume: keep the lines of checkpointed rounds, drop later ones (they run again) and
        a line torn by a crash, which is reported, never silently kept."""
        if not self.path.exists():
            return

        def torn(number: int) -> None:
            _LOG.warning(
                "%s line %d is torn (the run was killed while writing it); dropped", self.path, number
            )

        kept = [line for line, raw in self._lines(torn, parse=False) if raw["round"] <= last_round]
        write_bytes_atomically(self.path, "".join(kept).encode())

    def read_raw(self, on_torn: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        return [raw for _, raw in self._lines(on_torn)]

    def _parse(self, raw: dict[str, Any]) -> Any:
        return raw

    def _lines(self, on_torn: Callable[[int], None] | None, parse: bool = True) -> list[tuple[str, Any]]:
        """(line, parsed) pairs. A damaged line goes to `on_torn(line number)` if it is the last
        (torn by a crash, or still being written); otherwise a FedrunError names it."""
        try:
            lines = self.path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            raise FedrunError(
                f"{self.path} does not exist: give the --out directory of a fedrun run"
            ) from None
        parsed = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                if not line.endswith("\n"):
                    raise ValueError("no line end")
                raw = json.loads(line)
                parsed.append((line, self._parse(raw) if parse else raw))
            except (ValueError, TypeError, KeyError) as e:
                if on_torn is None or number < len(lines):
                    raise FedrunError(
                        f"{self.path} line {number} is not a {self.kind} of this fedrun version ({e}): "
                        f"the file is damaged or from an older fedrun"
                    ) from None
                on_torn(number)
        return parsed


class RoundsFile(JsonLines):
    """rounds.jsonl: one round record per line, appended as each round ends."""

    kind = "round record"

    def append(self, record: RoundRecord) -> None:
        self.append_all([record.to_json()])

    def read(self, on_torn: Callable[[int], None] | None = None) -> list[RoundRecord]:
        """The records, in file order (see `_lines` for damaged lines)."""
        return [record for _, record in self._lines(on_torn)]

    def _parse(self, raw: dict[str, Any]) -> RoundRecord:
        return RoundRecord.from_json(raw)


class RunDirectory:
    """Owns DIR: writes the resolved config once, then appends one durable line per round."""

    def __init__(self, path: Path):
        self.path = path
        self.rounds = RoundsFile(path / ROUNDS)
        self.clients = JsonLines(path / CLIENTS)  # with a system model: each selected client's round
        self.weights_file = path / WEIGHTS

    def create(self) -> bool:
        """Makes the folder if needed (True if it made it); a FedrunError if it cannot be written to."""
        made = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise FedrunError(
                f"cannot write to output directory {self.path} ({e.strerror}): "
                f"choose a writable --out directory"
            ) from None
        return made

    def remove_if_empty(self) -> None:
        """After a run that failed before its first round: no empty folders left behind."""
        for folder in (self.path / WORKERS, self.path):
            try:
                folder.rmdir()
            except OSError:  # not empty, or not there: keep it
                pass

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).exists()

    def write_config(self, config: RunConfig) -> None:
        write_bytes_atomically(self.path / CONFIG, config_toml(config).encode())

    def start_fresh(self) -> None:
        """A new run in this directory: an empty rounds.jsonl, and no checkpoint, weights, report
        or TensorBoard events of an earlier run (`--overwrite`) that could be mistaken for this
        one's (resuming appends instead). Worker logs keep earlier sessions above this one's."""
        for stale in (
            self.path / CHECKPOINT,
            self.weights_file,
            self.clients.path,
            self.path / LABEL_MIX,
            self.path / PARTITION,
        ):
            stale.unlink(missing_ok=True)
        for folder in (REPORT, TENSORBOARD):  # plots and events of a run this one replaces
            shutil.rmtree(self.path / folder, ignore_errors=True)
        self.rounds.path.write_text("")

    def write_data_description(self, source: ClientDataSource) -> None:
        """What the clients' data looks like, for the report and for reuse: the label mix of a few
        training clients, and the partition when this run split centralized data into clients."""
        from fedrun.data.description import label_mix  # reads examples with TensorFlow

        write_bytes_atomically(self.path / LABEL_MIX, json.dumps(label_mix(source)).encode())
        if source.partition is not None:
            buffer = io.BytesIO()
            np.savez(buffer, client=source.partition)
            write_bytes_atomically(self.path / PARTITION, buffer.getvalue())

    def save_weights(self, trainable: list[np.ndarray], non_trainable: list[np.ndarray]) -> None:
        arrays = {f"trainable_{i}": np.asarray(w) for i, w in enumerate(trainable)}
        arrays.update({f"non_trainable_{i}": np.asarray(w) for i, w in enumerate(non_trainable)})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomically(self.weights_file, buffer.getvalue())
