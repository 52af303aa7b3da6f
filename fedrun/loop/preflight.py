"""Checks that need no TensorFlow and no worker, made before either loads (well under a second):
the commonest mistakes fail at once, and before anything is written to the output folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cluster import backend_options
from fedrun.config import RunConfig
from fedrun.errors import FedrunError
from fedrun.loop.checkpoint import CHECKPOINT
from fedrun.loop.run_dir import CONFIG, ROUNDS


def preflight(config: RunConfig, *, resume: bool, overwrite: bool) -> None:
    _check_output(config.output.dir, resume=resume, overwrite=overwrite)
    if resume:
        _check_rounds_left(config)
    _check_inputs(config)
    backend_options(config.cluster).preflight()  # e.g. the worker binary of this machine


def finished_rounds(run_dir: Path) -> int:
    """The round of a run's checkpoint (0 if none), read without TensorFlow."""
    try:
        with np.load(run_dir / CHECKPOINT) as data:
            return int(json.loads(bytes(data["__meta__"]).decode())["round"])
    except (OSError, KeyError, ValueError):
        return 0


def holds_a_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (CONFIG, ROUNDS, CHECKPOINT))


def _check_output(out: Path, *, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FedrunError(f"--out {out} is a file, not a folder: choose a writable --out directory")
    if not resume and holds_a_run(out) and not overwrite:
        raise FedrunError(
            f"--out {out} already holds a run ({finished_rounds(out)} rounds checkpointed): continue it "
            f"with --resume {out}, replace it with --overwrite (which removes its rounds, checkpoint, "
            f"weights, report and TensorBoard events), or choose another --out"
        )
    existing = next(parent for parent in (out, *out.parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise FedrunError(
            f"cannot write to output directory {out} ({existing} is not a writable folder): "
            f"choose a writable --out directory"
        )


def _check_rounds_left(config: RunConfig) -> None:
    done, planned = finished_rounds(config.output.dir), config.workload.rounds
    if done >= planned:
        raise FedrunError(
            f"--resume {config.output.dir}: the run has finished all {planned} of its rounds; to train "
            f"longer, give it more: --resume {config.output.dir} --rounds {planned + max(planned // 2, 1)}"
        )


def _check_inputs(config: RunConfig) -> None:
    """Every file the configuration names exists (what is in it is checked where it is read)."""
    files = {
        "--data": config.data.source if config.data.source.endswith(".npz") else "",
        "--test-data": config.data.test_data,
        "--device-trace": config.system.device_trace,
        "--availability-trace": config.system.availability_trace,
    }
    for flag, name in files.items():
        if name and not Path(name).expanduser().is_file():
            raise FedrunError(f"{flag} {name} does not exist: check the path")
    if config.data.data_dir and not Path(config.data.data_dir).expanduser().is_dir():
        raise FedrunError(f"--data-dir {config.data.data_dir} is not a folder: check the path")
