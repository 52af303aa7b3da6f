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
