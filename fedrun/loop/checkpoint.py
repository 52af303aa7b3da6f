"""Durable round checkpoints: the whole server state (model and optimizer), written atomically.

Sampling and shuffling are pure functions of (seed, round), so the round number is all the
sampler state there is: resuming from round r replays rounds r+1.. exactly. A run with a system
model also keeps its virtual clock here (participation is rebuilt from clients.jsonl).
"""

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tree

from fedrun.atomic_write import write_bytes_atomically
from fedrun.errors import FedrunError

CHECKPOINT = "checkpoint.npz"


@dataclass(frozen=True)
class Checkpoint:
    round: int  # last completed round
    state: Any  # the learning process's server state
    clock_s: float = 0.0  # the virtual clock after that round (0 without a system model)
    extra: dict[str, Any] | None = None  # what else the loop keeps (buffered-async: its schedule)


def save_checkpoint(
    run_path: Path, round_num: int, state: Any, clock_s: float = 0.0, extra: dict[str, Any] | None = None
) -> None:
    """Atomic and durable: a crash leaves the old checkpoint or the new one. `extra` is JSON."""
    leaves = {f"leaf_{i}": np.asarray(v) for i, v in enumerate(tree.flatten(state))}
    meta = json.dumps(
        {"round": round_num, "clock_s": clock_s, "sampler": "stateless: (seed, round)", "extra": extra}
    )
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.frombuffer(meta.encode(), dtype=np.uint8), **leaves)
    write_bytes_atomically(run_path / CHECKPOINT, buffer.getvalue())


def load_checkpoint(run_path: Path, template: Any | Callable[[dict[str, Any] | None], Any]) -> Checkpoint:
    """Restores a state shaped like `template` (the process's initial state), or like what
    `template(extra)` returns when the state's shape depends on what the loop kept."""
    path = run_path / CHECKPOINT
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            leaves = [data[f"leaf_{i}"] for i in range(len(data.files) - 1)]
        if callable(template):
            template = template(meta.get("extra"))
    except FileNotFoundError:
        raise FedrunError(
            f"{path} does not exist: there is nothing to resume in {run_path} "
            f"(no round finished); start a new run instead"
        ) from None
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise FedrunError(f"checkpoint {path} is unreadable ({e}); start a new run") from None
    expected = tree.flatten(template)
    if len(leaves) != len(expected) or any(a.shape != np.shape(b) for a, b in zip(leaves, expected)):
        raise FedrunError(
            f"checkpoint {path} does not fit this run's model and optimizers; "
            f"resume with the configuration it was written with"
        )
    leaves = [leaf.astype(np.asarray(t).dtype)[()] for leaf, t in zip(leaves, expected)]
    return Checkpoint(
        round=int(meta["round"]),
        state=tree.unflatten_as(template, leaves),
        clock_s=float(meta.get("clock_s", 0.0)),
        extra=meta.get("extra"),
    )
