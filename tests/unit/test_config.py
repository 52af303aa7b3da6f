from pathlib import Path

import pytest

from fedrun.config import RunConfig, load_toml, resolve
from fedrun.errors import FedrunError


def test_defaults_are_the_seed_workload():
    c = RunConfig()
    assert (c.rounds, c.clients_per_round, c.epochs, c.batch_size, c.shuffle_buffer) == (10, 32, 5, 32, 1000)
    assert (c.client_lr, c.server_lr, c.workers) == (0.01, 1.0, 2)


def test_flags_override_file(tmp_path: Path):
    f = tmp_path / "run.toml"
    f.write_text('rounds = 3\nworkers = 3\nclient_lr = 0.05\nout = "x"\n')
    c = resolve(load_toml(f), {"workers": 1})
    assert (c.rounds, c.workers, c.client_lr, c.out) == (3, 1, 0.05, Path("x"))


def test_config_round_trips_through_toml(tmp_path: Path):
    c = RunConfig(rounds=4, seed=9, out=Path("a/b"))
    f = tmp_path / "c.toml"
    f.write_text(c.to_toml())
    assert resolve(load_toml(f), {}) == c


@pytest.mark.parametrize("text,message", [
    ("roundz = 3\n", "unknown key"),
    ('rounds = "3"\n', "'rounds' must be int"),
    ("client_lr = true\n", "'client_lr' must be float"),
    ("rounds = [\n", "not valid TOML"),
])
def test_bad_file_is_a_clear_error(tmp_path: Path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(FedrunError, match=message):
        resolve(load_toml(f), {})


def test_missing_file_names_the_path(tmp_path: Path):
    with pytest.raises(FedrunError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")


@pytest.mark.parametrize("values,message", [
    ({"rounds": -1}, "rounds must be at least 1"),
    ({"clients_per_round": 0}, "clients_per_round must be at least 1"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"client_lr": 0.0}, "client_lr must be greater than 0"),
    ({"server_lr": -1.0}, "server_lr must be greater than 0"),
    ({"clients_per_round": 50, "population": 40}, "exceeds the population"),
    ({"workers": 0}, "workers must be at least 1"),
    ({"client_loop": "while"}, "client_loop must be one of iterator, reduce"),
    ({"worker_inter_op_threads": -2}, "worker_inter_op_threads must not be negative"),
])
def test_out_of_range_values_are_rejected(values, message):
    with pytest.raises(FedrunError, match=message):
        resolve({}, values)
