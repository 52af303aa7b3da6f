"""How a local worker's process is configured, without starting one."""

import pytest

from cluster.local.options import LocalWorkerOptions


def test_thread_counts_reach_the_binary_environment(monkeypatch):
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    env = LocalWorkerOptions(intra_op_threads=3, inter_op_threads=4).worker_environment()
    assert (env["TF_NUM_INTRAOP_THREADS"], env["OMP_NUM_THREADS"], env["TF_NUM_INTEROP_THREADS"]) == (
        "3",
        "3",
        "4",
    )
    # 0 leaves TensorFlow's default (one thread per core): the variable is not set.
    env = LocalWorkerOptions(intra_op_threads=0, inter_op_threads=2).worker_environment()
    assert "TF_NUM_INTRAOP_THREADS" not in env and env["TF_NUM_INTEROP_THREADS"] == "2"


def test_negative_thread_count_is_rejected():
    with pytest.raises(ValueError, match="inter_op_threads must be 0"):
        LocalWorkerOptions(inter_op_threads=-1)


# --- slowing a worker down (--slow-worker) -------------------------------------------------------


def settings(**workers):
    from cluster import ClusterSettings, WorkerSettings

    return ClusterSettings(workers=WorkerSettings(**workers))


def test_slow_workers_reach_the_backend_that_starts_them():
    from cluster import backend_options

    local = backend_options(settings(slow="local-1:4, local-0:1.5", slow_mechanism="duty-cycle"))
    assert dict(local.slow) == {"local-1": 4.0, "local-0": 1.5} and local.slow_mechanism == "duty-cycle"
    ray = backend_options(settings(backend="ray", slow="ray-1:3"))
    assert dict(ray.slow) == {"ray-1": 3.0} and not ray.process.slow
    actor = ray.actor_process("ray-1")  # the actor's own backend calls its worker local-0
    assert dict(actor.slow) == {"local-0": 3.0} and actor.cpu_share == ray.cpus
    assert ray.actor_process("ray-0") == ray.process


@pytest.mark.parametrize(
    "text,message",
    [
        ("local-1", "is not ID:FACTOR"),
        ("local-1:1", "factor above 1"),
        ("local-1:fast", "is not ID:FACTOR"),
        ("local-1:2,local-1:3", "names 'local-1' twice"),
        ("local-7:2", "local-7, which this run does not have: its workers are local-0, local-1"),
    ],
)
def test_a_malformed_slow_worker_says_what_to_write(text, message):
    from cluster import WorkerError, backend_options

    with pytest.raises((ValueError, WorkerError), match=message):
        backend_options(settings(slow=text))


def test_workers_someone_else_runs_cannot_be_slowed_here():
    from cluster import WorkerError, backend_options

    with pytest.raises(WorkerError, match="throttle them where they run"):
        backend_options(settings(backend="static", addresses="127.0.0.1:8000", count=1, slow="static-0:2"))
