"""What a run leaves in its output directory: config.toml, rounds.jsonl, model_weights.npz."""

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrun.checkpoint import CHECKPOINT
from fedrun.config import RunConfig
from fedrun.errors import FedrunError

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardRecord:
    shard: int
    worker: str
    clients: list[str]
    examples: int  # examples the shard's clients hold (one epoch)
    start: float  # seconds since the run started
    end: float


@dataclass(frozen=True)
class RoundRecord:
    round: int
    latency_s: float  # wall time of the training round, sampling to new server state
    start: float  # seconds since the run started
    clients: int
    examples: int  # examples the round's clients hold (one epoch)
    examples_trained: int  # examples processed, all epochs
    clients_per_s: float
    examples_per_s: float  # examples_trained / latency_s
    shards: list[ShardRecord]
    bytes_to_workers: int  # serialized gRPC requests of the training round, all workers
    bytes_from_workers: int
    workers: int  # workers in the pool at the end of the round
    failures: list[dict[str, Any]]  # workers lost during the round; their shards ran again
    train: dict[str, float]
    eval: dict[str, dict[str, float]] = field(default_factory=dict)
    eval_latency_s: float = 0.0
    recycled: list[str] = field(default_factory=list)  # workers made fresh before the round


class RunDirectory:
    """Owns DIR: writes the resolved config once, then appends one durable line per round."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise FedrunError(f"cannot write to output directory {path} ({e.strerror}): "
                              f"choose a writable --out directory") from None
        self.rounds_file = path / "rounds.jsonl"
        self.weights_file = path / "model_weights.npz"

    def write_config(self, config: RunConfig) -> None:
        _atomic_write(self.path / "config.toml", config.to_toml().encode())

    def start_fresh(self) -> None:
        """A new run in this directory: an empty rounds.jsonl, and no checkpoint or weights of
        an earlier run that could be mistaken for this one's (resuming appends instead)."""
        for stale in (self.path / CHECKPOINT, self.weights_file):
            stale.unlink(missing_ok=True)
        self.rounds_file.write_text("")

    def keep_rounds_up_to(self, last_round: int) -> None:
        """On resume: keep the records of checkpointed rounds, drop later ones (they run again)
        and a line torn by a crash, which is reported, never silently kept."""
        lines = self.rounds_file.read_text().splitlines(keepends=True) if self.rounds_file.exists() else []
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                if not line.endswith("\n"):
                    raise ValueError("no line end")
                record = json.loads(line)
            except ValueError:
                _LOG.warning("%s line %d is torn (the run was killed while writing it); dropped",
                             self.rounds_file, number)
                continue
            if record["round"] <= last_round:
                kept.append(line)
        _atomic_write(self.rounds_file, "".join(kept).encode())

    def append_round(self, record: RoundRecord) -> None:
        line = json.dumps(asdict(record), separators=(",", ":")) + "\n"
        with open(self.rounds_file, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def save_weights(self, trainable: list[np.ndarray], non_trainable: list[np.ndarray]) -> None:
        arrays = {f"trainable_{i}": np.asarray(w) for i, w in enumerate(trainable)}
        arrays.update({f"non_trainable_{i}": np.asarray(w) for i, w in enumerate(non_trainable)})
        with tempfile.NamedTemporaryFile(dir=self.path, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **arrays)
        _fsync_rename(Path(tmp.name), self.weights_file)


def read_rounds(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_weights(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    with np.load(path) as data:
        def group(prefix):
            return [data[f"{prefix}_{i}"] for i in range(sum(k.startswith(prefix + "_") for k in data))]
        return group("trainable"), group("non_trainable")


def _atomic_write(target: Path, payload: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(payload)
    _fsync_rename(Path(tmp.name), target)


def _fsync_rename(tmp: Path, target: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
