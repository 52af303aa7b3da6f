"""fedrun beside pfl-research on a tiny .npz (opt-in: `make bench-peers` builds .venv-peers and
runs this): every row is measured, and pfl on 1 and 2 processes ends with fedrun's model. No
timing is asserted: this machine's speed is not the code's behaviour."""

import pytest

from fedrun.bench.peers import pfl
from fedrun.config import RunConfig, flag_values, resolve
from fedrun.errors import FedrunError
from tests.support.data_files import write_npz

pytestmark = [pytest.mark.peers, pytest.mark.timeout(900)]


def _workload(data) -> RunConfig:
    flags = {
        "data": str(data),
        "rounds": 3,
        "clients-per-round": 4,
        "epochs": 2,
        "batch-size": 8,
        "workers": 2,
        "eval-every": 0,
        "tensorboard": False,
        "progress": False,
    }
    return resolve(flag_values(flags))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    if not (pfl.PEERS_VENV / "bin" / "python").exists():
        pytest.skip(f"{pfl.PEERS_VENV} is missing: build it with `make bench-peers`")
    data = write_npz(tmp_path_factory.mktemp("peers") / "clients.npz", clients=12, per_client=25)
    return pfl.pfl_side_by_side(_workload(data), processes=(1, 2))


def test_every_system_is_measured(result):
    rows = {r["system"]: r for r in result["rows"]}
    assert list(rows) == ["fedrun", "pfl, 1 process", "pfl, 2 processes"]
    assert [r["processes"] for r in rows.values()] == [2, 1, 2]
    for row in rows.values():
        assert len(row["latencies_s"]) == 2  # rounds 2 and 3; round 1 warms up
        assert row["examples_per_s"] > 0 and row["round_latency_median_s"] > 0
    assert rows["fedrun"]["fedrun_vs_this"] == 1.0
    for name in ("pfl, 1 process", "pfl, 2 processes"):  # its share of putting clients in fedrun's order
        assert 0 < rows[name]["data_s_median"] < rows[name]["round_latency_median_s"]
    assert "pfl, 2 processes" in pfl.peers_table(result)


def test_pfl_ends_with_fedruns_model(result):
    agreement = result["agreement"]
    assert set(agreement["max_weight_diff_vs_fedrun"]) == {"pfl, 1 process", "pfl, 2 processes"}
    assert agreement["passed"], agreement


def test_a_missing_environment_names_the_make_target(tmp_path, monkeypatch):
    monkeypatch.setattr(pfl, "PEERS_VENV", tmp_path / "absent")
    with pytest.raises(FedrunError, match="make bench-peers"):
        pfl.pfl_side_by_side(_workload(tmp_path / "clients.npz"))
