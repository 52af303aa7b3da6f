from pathlib import Path

import pytest

from fedrun.config import FIELDS, RunConfig, config_toml, read_config_file, resolve
from fedrun.errors import FedrunError
from tests.support.configs import flat_config


def test_defaults_are_the_seed_workload():
    c = RunConfig()
    w = c.workload
    assert (w.rounds, w.clients_per_round, w.epochs, w.batch_size, w.shuffle_buffer) == (10, 32, 5, 32, 1000)
    assert (w.client_lr, w.server_lr, c.workers.count) == (0.01, 1.0, 2)


def test_flags_override_file(tmp_path: Path):
    f = tmp_path / "run.toml"
    f.write_text('[workload]\nrounds = 3\nclient_lr = 0.05\n[workers]\ncount = 3\n[output]\ndir = "x"\n')
    c = flat_config(resolve(read_config_file(f)), workers=1)
    assert (c.workload.rounds, c.workers.count, c.workload.client_lr, c.output.dir) == (3, 1, 0.05, Path("x"))


def test_old_flat_files_keep_working(tmp_path: Path):
    f = tmp_path / "run.toml"
    f.write_text('rounds = 3\nworkers = 3\nclient_lr = 0.05\nout = "x"\nworker_isolation = "none"\n')
    c = resolve(read_config_file(f))
    assert (c.workload.rounds, c.workers.count, c.workload.client_lr, c.output.dir) == (3, 3, 0.05, Path("x"))
    assert c.workers.isolation == "none"


def test_config_round_trips_through_toml(tmp_path: Path):
    c = flat_config(rounds=4, seed=9, out="a/b", worker_isolation="none")
    f = tmp_path / "c.toml"
    f.write_text(config_toml(c))
    assert resolve(read_config_file(f)) == c


@pytest.mark.parametrize(
    "text,message",
    [
        ("roundz = 3\n", "unknown key 'roundz' \\(did you mean 'rounds'\\?\\)"),
        ('rounds = "3"\n', "'rounds' must be int"),
        ("client_lr = true\n", "'client_lr' must be float"),
        ("rounds = [\n", "not valid TOML"),
        ("[workload]\nround = 3\n", "unknown key 'round' in \\[workload\\] \\(did you mean 'rounds'\\?\\)"),
        ("[workload]\nworkers = 3\n", "it belongs in \\[workers\\] as count"),
        ("[workloads]\nrounds = 3\n", "unknown table \\[workloads\\] \\(did you mean 'workload'\\?\\)"),
        (
            "rounds = 3\n[workers]\ncount = 2\n",
            "(?s)mixes top-level keys \\(rounds\\) with tables.*\\[workload\\] rounds = 3",
        ),
    ],
)
def test_bad_file_is_a_clear_error(tmp_path: Path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(FedrunError, match=message):
        resolve(read_config_file(f))


def test_missing_file_names_the_path(tmp_path: Path):
    with pytest.raises(FedrunError, match="does not exist"):
        read_config_file(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "values,message",
    [
        ({"rounds": -1}, "rounds must be at least 1"),
        ({"clients_per_round": 0}, "clients_per_round must be at least 1"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"client_lr": 0.0}, "client_lr must be greater than 0"),
        ({"server_lr": -1.0}, "server_lr must be greater than 0"),
        ({"clients_per_round": 50, "population": 40}, "exceeds the population"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"client_loop": "while"}, "client_loop must be one of iterator, reduce"),
        ({"worker_inter_op_threads": -2}, "inter_op_threads must be 0"),
        ({"model": "resnet"}, "model must be one of linear, custom-linear, cnn, got 'resnet'"),
        ({"backend": "kubernetes"}, "backend must be one of local, static, ray, got 'kubernetes'"),
    ],
)
def test_out_of_range_values_are_rejected(values, message):
    with pytest.raises(FedrunError, match=message):
        flat_config(**values)


ASYNC = {"aggregation": "buffered-async", "system_model": "lognormal"}


@pytest.mark.parametrize(
    "values,message",
    [
        ({"aggregation": "buffered-async"}, "runs its clients on the virtual clock: choose a --system-model"),
        ({**ASYNC, "over_selection": 1.3}, "buffered-async has no rounds to close"),
        ({**ASYNC, "deadline_s": 5.0}, "its counterpart is --max-staleness"),
        ({**ASYNC, "shard_sizing": "speed"}, "use equal with buffered-async"),
        ({**ASYNC, "max_concurrency": 2000, "population": 100}, "lower --max-concurrency"),
        ({**ASYNC, "buffer_size": 0}, "buffer_size must be at least 1"),
        ({**ASYNC, "max_staleness": -1}, "max_staleness must not be negative"),
        ({**ASYNC, "staleness_weight": "hinge"}, "sqrt, constant or polynomial:A"),
        ({"aggregation": "fedasync"}, "must be one of sync, buffered-async"),
    ],
)
def test_buffered_async_options_are_checked(values, message):
    with pytest.raises(FedrunError, match=message):
        flat_config(**values)


def test_buffered_async_takes_dropout_and_its_own_options():
    config = flat_config(
        **ASYNC, dropout=0.1, buffer_size=8, max_concurrency=32, staleness_weight="polynomial:0.5"
    )
    assert config.aggregation.buffered and config.aggregation.max_concurrency == 32


def test_every_field_documents_itself_and_flags_are_unique():
    assert len({info.flag for info in FIELDS}) == len(FIELDS)
    for info in FIELDS:
        assert info.help and info.describe().startswith(info.help), info.flag


def test_which_fields_decide_the_result_is_declared_on_them():
    deciding = {info.key for info in FIELDS if info.decides_result}
    assert {"clients_per_round", "seed", "model", "data", "eval_clients", "client_lr"} <= deciding
    # Evaluation's schedule and groups change what is measured, not the model.
    assert not {"eval_every", "eval_on", "rounds", "workers", "backend", "out"} & deciding
    c = RunConfig()
    assert [
        i.key for i in c.result_differences(flat_config(eval_every=3, eval_on="heldout", workers=1))
    ] == []
    assert [i.key for i in c.result_differences(flat_config(seed=4))] == ["seed"]
