"""Bad input: one clear paragraph naming the problem and the fix, a non-zero exit within 10 s, no
traceback, and nothing already written is lost.

Every case runs `fedrun run` into a directory that already holds an earlier run's files; they
must be untouched afterwards.
"""

import http.server
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.processes import fedrun

pytestmark = pytest.mark.timeout(120)

SMALL = "--rounds 1 --clients-per-round 4 --epochs 1 --population 20 --eval-clients 2".split()
# Each case writes into a folder holding an earlier run, told to replace it: nothing may change.
SMALL += ["--no-progress", "--no-tensorboard", "--overwrite"]
EARLIER = {
    "rounds.jsonl": '{"round": 1}\n',
    "checkpoint.npz": "earlier checkpoint",
    "config.toml": "rounds = 1\n",
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def case_files(tmp: Path) -> dict[str, list[str]]:
    """Arguments of each case; the files they name are made here."""
    (tmp / "unknown_key.toml").write_text("roundz = 3\n")
    (tmp / "wrong_type.toml").write_text('rounds = "ten"\n')
    (tmp / "corrupt.npz").write_bytes(b"this is not a zip archive")
    np.savez(tmp / "misshaped.npz", x=np.zeros((10, 4)), y=np.zeros(10, np.int64))  # no `client`
    np.savez(tmp / "negative_label.npz", x=np.zeros((10, 4)), y=-np.ones(10, np.int64), client=np.arange(10))
    (tmp / "a_file").write_text("not a directory")
    (tmp / "not_executable").write_text("#!/bin/sh\n")
    return {
        "unknown flag": ["--roundz", "3"],
        "unknown config key": ["--config", str(tmp / "unknown_key.toml")],
        "wrong type of flag": ["--rounds", "ten"],
        "wrong type in config": ["--config", str(tmp / "wrong_type.toml")],
        "negative rounds": ["--rounds", "-1"],
        "no clients per round": ["--clients-per-round", "0"],
        "more clients than the population": ["--clients-per-round", "50"],
        "zero learning rate": ["--client-lr", "0"],
        "negative server learning rate": ["--server-lr", "-0.5"],
        "zero epochs": ["--epochs", "0"],
        "missing data file": ["--data", str(tmp / "missing.npz")],
        "corrupt data file": ["--data", str(tmp / "corrupt.npz")],
        "misshaped data file": ["--data", str(tmp / "misshaped.npz")],
        "negative labels": ["--data", str(tmp / "negative_label.npz")],
        "output is a file": ["--out", str(tmp / "a_file")],
        "output not writable": ["--out", "/proc/fedrun-out"],
        "missing worker binary": ["--worker-binary", str(tmp / "no_such_binary")],
        "worker binary not executable": ["--worker-binary", str(tmp / "not_executable")],
        # The static backend waits up to --worker-start-timeout-s for a worker that may still be
        # starting (a pod); the user bounds that wait.
        "unreachable worker address": [
            "--backend",
            "static",
            "--workers",
            "1",
            "--worker-start-timeout-s",
            "1",
            "--worker-addresses",
            f"127.0.0.1:{closed_port()}",
        ],
    }


EXPECTED = {
    "unknown flag": "unrecognized arguments: --roundz",
    "unknown config key": "unknown key 'roundz' (did you mean 'rounds'?)",
    "wrong type of flag": "invalid int value: 'ten'",
    "wrong type in config": "'rounds' must be int",
    "negative rounds": "rounds must be at least 1",
    "no clients per round": "clients_per_round must be at least 1",
    "more clients than the population": "exceeds the population",
    "zero learning rate": "client_lr must be greater than 0",
    "negative server learning rate": "server_lr must be greater than 0",
    "zero epochs": "epochs must be at least 1",
    "missing data file": "does not exist",
    "corrupt data file": "is not a readable .npz file",
    "misshaped data file": "lacks array(s) client",
    "negative labels": "is negative",
    "output is a file": "choose a writable --out",
    "output not writable": "choose a writable --out",
    "missing worker binary": "no_such_binary",
    "worker binary not executable": "not_executable",
    "unreachable worker address": "unreachable",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_bad_input_is_a_clear_error_that_loses_nothing(case, tmp_path):
    args = case_files(tmp_path)[case]
    earlier = tmp_path / "earlier-run"
    earlier.mkdir()
    for name, text in EARLIER.items():
        (earlier / name).write_text(text)
    out = [] if "--out" in args else ["--out", str(earlier)]

    started = time.monotonic()
    result = subprocess.run(fedrun("run", *SMALL, *out, *args), capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started

    assert result.returncode == 2, result.stderr
    assert EXPECTED[case] in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f}s to report {case}"
    assert {name: (earlier / name).read_text() for name in EARLIER} == EARLIER
    if case == "output is a file":
        assert (tmp_path / "a_file").read_text() == "not a directory"


def test_a_grpc_server_that_is_not_a_tff_executor_is_refused(tmp_path):
    """An HTTP server stands in for "something else listens at that address"."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        result = subprocess.run(
            fedrun(
                "run",
                *SMALL,
                "--backend",
                "static",
                "--workers",
                "1",
                "--worker-addresses",
                address,
                "--worker-start-timeout-s",
                "5",
                "--out",
                str(tmp_path / "o"),
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
    assert result.returncode == 2
    assert address in result.stderr and "Traceback" not in result.stderr


def test_a_taken_metrics_port_is_refused(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            fedrun("run", *SMALL, "--metrics-port", str(port), "--out", str(tmp_path / "o")),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert str(port) in result.stderr and "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        fedrun(
            "run", *SMALL, "--debug", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert os.path.basename("missing.npz") in result.stderr
