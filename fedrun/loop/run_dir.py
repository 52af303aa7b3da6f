"""What a run leaves in its output directory, and the one reader and writer of each file:
config.toml, rounds.jsonl, model_weights.npz (checkpoint.npz: loop.checkpoint)."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedrun.atomic_write import write_bytes_atomically
from fedrun.config import RunConfig, config_toml
from fedrun.errors import FedrunError
from fedrun.loop.checkpoint import CHECKPOINT
from fedrun.loop.records import RoundRecord

_LOG = logging.getLogger(__name__)
ROUNDS = "rounds.jsonl"
CONFIG = "config.toml"
WEIGHTS = "model_weights.npz"


class RoundsFile:
    """rounds.jsonl: one JSON round record per line, appended durably as each round ends."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: RoundRecord) -> None:
        line = json.dumps(record.to_json(), separators=(",", ":")) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read(self, on_torn: Callable[[int], None] | None = None) -> list[RoundRecord]:
        """The records, in file order. A line torn by a crash or still being written (the last
        one) goes to `on_torn(line number)` and is skipped; without `on_torn`, and for any other
        damaged line, a FedrunError names it."""
        return [record for _, record in self._lines(on_torn)]

    def keep_up_to(self, last_round: int) -> None:
        """On resume: keep the records of checkpointed rounds, drop later ones (they run again)
        and a line torn by a crash, which is reported, never silently kept."""

        def torn(number: int) -> None:
            _LOG.warning(
                "%s line %d is torn (the run was killed while writing it); dropped", self.path, number
            )

        kept = [line for line, record in self._lines(torn) if record.round <= last_round]
        write_bytes_atomically(self.path, "".join(kept).encode())

    def _lines(self, on_torn: Callable[[int], None] | None) -> list[tuple[str, RoundRecord]]:
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
                parsed.append((line, RoundRecord.from_json(json.loads(line))))
            except (ValueError, TypeError, KeyError) as e:
                if on_torn is None or number < len(lines):
                    raise FedrunError(
                        f"{self.path} line {number} is not a round record of this fedrun "
                        f"version ({e}): the file is damaged or from an older fedrun"
                    ) from None
                on_torn(number)
        return parsed


class RunDirectory:
    """Owns DIR: writes the resolved config once, then appends one durable line per round."""

    def __init__(self, path: Path):
        self.path = path
        self.rounds = RoundsFile(path / ROUNDS)
        self.weights_file = path / WEIGHTS

    def create(self) -> None:
        """Makes the folder if needed; a FedrunError if it cannot be written to."""
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

    def write_config(self, config: RunConfig) -> None:
        write_bytes_atomically(self.path / CONFIG, config_toml(config).encode())

    def start_fresh(self) -> None:
        """A new run in this directory: an empty rounds.jsonl, and no checkpoint or weights of
        an earlier run that could be mistaken for this one's (resuming appends instead)."""
        for stale in (self.path / CHECKPOINT, self.weights_file):
            stale.unlink(missing_ok=True)
        self.rounds.path.write_text("")

    def save_weights(self, trainable: list[np.ndarray], non_trainable: list[np.ndarray]) -> None:
        arrays = {f"trainable_{i}": np.asarray(w) for i, w in enumerate(trainable)}
        arrays.update({f"non_trainable_{i}": np.asarray(w) for i, w in enumerate(non_trainable)})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomically(self.weights_file, buffer.getvalue())
