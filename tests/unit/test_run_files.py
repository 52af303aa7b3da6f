"""What a run leaves on disk, without running anything: checkpoints round-trip exactly, rounds.jsonl
keeps only checkpointed rounds on resume, and resuming refuses what would change the result."""

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import pytest

from fedrun.cli import run_config
from fedrun.config import config_toml
from fedrun.errors import FedrunError
from fedrun.loop.checkpoint import load_checkpoint, save_checkpoint
from fedrun.loop.records import RoundRecord
from fedrun.loop.run_dir import RoundsFile
from tests.support.configs import flat_config

State = collections.namedtuple("State", ["weights", "optimizer", "round"])


def _state(scale: float) -> State:
    return State(
        [np.full((3, 2), scale, np.float32), np.arange(2, dtype=np.float32) * scale],
        {"step": np.int64(7 * scale)},
        np.int32(1),
    )


def test_a_checkpoint_restores_the_state_bit_for_bit(tmp_path: Path):
    saved = _state(0.1 + 1e-9)
    save_checkpoint(tmp_path, 5, saved)
    checkpoint = load_checkpoint(tmp_path, _state(0.0))

    assert checkpoint.round == 5
    assert all(
        np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(checkpoint.state.weights, saved.weights)
    )
    assert checkpoint.state.optimizer["step"] == saved.optimizer["step"]
    assert not [p for p in tmp_path.iterdir() if p.name != "checkpoint.npz"]  # no temporary left


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path):
    save_checkpoint(tmp_path, 2, _state(1.0))
    other = State([np.zeros((4, 2), np.float32), np.zeros(2, np.float32)], {"step": np.int64(0)}, np.int32(0))
    with pytest.raises(FedrunError, match="does not fit this run's model"):
        load_checkpoint(tmp_path, other)
    with pytest.raises(FedrunError, match="nothing to resume"):
        load_checkpoint(tmp_path / "elsewhere", other)


def _record(number: int) -> RoundRecord:
    return RoundRecord(
        round=number,
        latency_s=1.0,
        start=float(number),
        clients=2,
        examples=10,
        examples_trained=10,
        clients_per_s=2.0,
        examples_per_s=10.0,
        shards=[],
        bytes_to_workers=0,
        bytes_from_workers=0,
        workers=1,
        failures=[],
        train={"loss": 1.0, "accuracy": 0.5, "num_examples": 10},
    )


def test_resume_keeps_the_checkpointed_rounds_and_drops_a_torn_line(tmp_path: Path, caplog):
    rounds = RoundsFile(tmp_path / "rounds.jsonl")
    rounds.path.write_text("")
    for number in (1, 2, 3):
        rounds.append(_record(number))
    with open(rounds.path, "a") as f:
        f.write('{"round": 4, "lat')

    rounds.keep_up_to(2)

    assert [r.round for r in rounds.read()] == [1, 2]
    assert "torn" in caplog.text


def _args(resume: Path, **flags) -> argparse.Namespace:
    return argparse.Namespace(config=None, resume=resume, **flags)


def test_resume_may_change_how_a_run_executes_but_not_what_it_computes(tmp_path: Path):
    saved = flat_config(rounds=4, seed=3, workers=2, eval_every=1, worker_isolation="none")
    (tmp_path / "config.toml").write_text(config_toml(saved))

    more = run_config(_args(tmp_path, rounds=8, workers=1, eval_every=2))
    assert (more.workload.rounds, more.workers.count, more.eval.every) == (8, 1, 2)
    assert more.workload.seed == 3 and more.output.dir == tmp_path

    with pytest.raises(FedrunError, match="different configuration \\(seed: 3 there, 4 here"):
        run_config(_args(tmp_path, seed=4))
    with pytest.raises(FedrunError, match="not a fedrun run directory"):
        run_config(_args(tmp_path / "nothing"))


def test_a_run_of_the_flat_format_resumes(tmp_path: Path):
    (tmp_path / "config.toml").write_text('rounds = 4\nseed = 3\nworker_isolation = "none"\nout = "x"\n')
    resumed = run_config(_args(tmp_path, rounds=6))
    assert (resumed.workload.rounds, resumed.workload.seed, resumed.output.dir) == (6, 3, tmp_path)
    assert json.loads(json.dumps(resumed.as_tables(), default=str))["workers"]["isolation"] == "none"
