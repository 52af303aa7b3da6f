"""`fedrun` as a person uses it: nothing overwritten silently, errors before anything starts, a
word at every long wait, and help that points the way. Real processes, real files."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.local.backend import SOCKETS_PREFIX
from cluster.local.scratch import make, remove_orphans
from tests.support.backends import free_port, start_fedrun_worker, stop_fedrun_worker
from tests.support.processes import fedrun

pytestmark = pytest.mark.timeout(300)

SMALL = "--rounds 2 --clients-per-round 6 --epochs 1 --population 60 --eval-clients 4 --no-progress".split()


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(fedrun(*args), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run("run", *SMALL, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_each_long_wait_says_what_it_waits_for_and_the_end_names_the_results(finished):
    out, result = finished
    assert "starting 2 local workers" in result.stderr
    assert "building the round's computations" in result.stderr
    assert f"results in {out}; plot them with: fedrun report {out}" in result.stdout


def test_an_out_that_holds_a_run_is_refused_unless_overwritten(finished, tmp_path):
    out, _ = finished
    before = (out / "rounds.jsonl").read_text()
    refused = run("run", *SMALL, "--out", str(out))
    assert refused.returncode == 2
    assert f"already holds a run (2 rounds checkpointed): continue it with --resume {out}" in refused.stderr
    assert "--overwrite" in refused.stderr and (out / "rounds.jsonl").read_text() == before

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    (copy / "report").mkdir()
    (copy / "report" / "old.png").write_text("an old plot")
    (copy / "tb" / "train").mkdir(parents=True, exist_ok=True)
    (copy / "tb" / "train" / "events.out.tfevents.1").write_text("old events")
    replaced = run("run", *SMALL, "--rounds", "1", "--overwrite", "--out", str(copy))
    assert replaced.returncode == 0, replaced.stderr
    assert len((copy / "rounds.jsonl").read_text().splitlines()) == 1
    assert not (copy / "report").exists()
    assert not (copy / "tb" / "train" / "events.out.tfevents.1").exists()


def test_resuming_says_where_and_a_finished_run_says_so_at_once(finished, tmp_path):
    out, _ = finished
    started = time.monotonic()
    done = run("run", "--resume", str(out), timeout=60)
    assert done.returncode == 2
    assert "has finished all 2 of its rounds" in done.stderr and f"--resume {out} --rounds 3" in done.stderr
    assert time.monotonic() - started < 10  # no worker, no TensorFlow

    copy = tmp_path / "more"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    more = run("run", "--resume", str(copy), "--rounds", "3")
    assert more.returncode == 0, more.stderr
    assert f"resuming {copy} after round 2: rounds 3 to 3 to go" in more.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "resnet"], "model must be one of linear, custom-linear, cnn"),
        (["--backend", "kubernetes"], "backend must be one of local, static, ray"),
        (["--data", "missing.npz"], "--data missing.npz does not exist"),
        (
            ["--system-model", "fedscale", "--device-trace", "no-trace.pkl"],
            "--device-trace no-trace.pkl does not exist",
        ),
        (["--data-dir", "no-such-folder", "--data", "emnist"], "--data-dir no-such-folder is not a folder"),
    ],
)
def test_options_that_need_no_worker_fail_before_anything_starts_and_write_nothing(args, message, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    result = run("run", *SMALL, *args, "--out", str(out), timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "starting" not in result.stderr  # no worker was started
    assert not out.exists()  # not even an empty folder
    assert time.monotonic() - started < 10


def test_a_static_address_that_refuses_is_named_with_the_flag_that_sets_the_timeout(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result = run(
        "run",
        *SMALL,
        "--backend",
        "static",
        "--workers",
        "1",
        "--worker-addresses",
        address,
        "--worker-start-timeout-s",
        "4",
        "--out",
        str(tmp_path / "out"),
        timeout=60,
    )
    assert result.returncode == 2
    assert f"waiting for 1 of 1 static workers: {address} (refuses connections)" in result.stderr
    assert "--worker-start-timeout-s" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_flags_are_never_abbreviated_and_typos_get_a_suggestion():
    abbreviated = run("run", "--round", "3", timeout=60)
    assert abbreviated.returncode == 2
    assert "unrecognized arguments: --round (did you mean --rounds?)" in abbreviated.stderr
    wrong = run("run", "--rounds", "ten", timeout=60)
    assert wrong.returncode == 2 and "usage:" not in wrong.stderr  # one line, not the whole usage
    assert wrong.stderr.splitlines() == [
        "fedrun run: error: argument --rounds: invalid int value: 'ten'",
        "(see `fedrun run --help`)",
    ]


def test_every_flag_of_run_says_what_it_does_and_the_top_level_help_describes_fedrun():
    help_text = run("run", "--help", timeout=60).stdout
    for section in (
        "[workload]",
        "[data]",
        "[eval]",
        "[workers]",
        "[dispatch]",
        "[ray]",
        "[system]",
        "[policy]",
        "[observe]",
        "[output]",
    ):
        assert section in help_text
    assert "one of: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD" in help_text
    assert "one of: auto, netns, none" in help_text and "(s)" in help_text
    top = run("--help", timeout=60).stdout
    assert "federated-learning simulator" in top and "#" not in top


def test_report_takes_the_run_folder_or_any_file_in_it(finished):
    out, _ = finished
    result = run("report", str(out / "rounds.jsonl"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out / "report" / "summary.md").exists()


def test_fedrun_worker_on_a_taken_port_fails_before_the_binary_starts():
    port = free_port()
    first = start_fedrun_worker(port)
    try:
        second = run("worker", "--port", str(port), timeout=60)
        assert second.returncode == 2
        assert f"port {port} is already in use" in second.stderr
        assert "ExecutorService started" not in second.stderr
    finally:
        stop_fedrun_worker(first)


def test_socket_folders_of_dead_coordinators_are_removed_at_the_next_start(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    mine = make(SOCKETS_PREFIX)
    orphan = make(SOCKETS_PREFIX)
    (orphan / "owner").write_text(f"{dead.stdout.strip()} 12345.0")  # its owner has exited
    try:
        removed = remove_orphans(SOCKETS_PREFIX)
        assert orphan in removed and not orphan.exists()
        assert mine.exists()  # this process is alive: its folder stays
    finally:
        shutil.rmtree(mine, ignore_errors=True)
