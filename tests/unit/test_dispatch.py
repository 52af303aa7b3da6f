"""The dispatcher's decisions, over fake workers (fedrun.runtime.fake): no process, no TFF call.

A fake worker runs a Python function per call on a thread of its own; these tests script which
calls fail or hang, and pin what the dispatcher does about it.
"""

import threading
import time

import pytest

from fedrun.errors import FedrunError
from fedrun.runtime.dispatch import MAX_SHARD_ATTEMPTS, NoWorkersLeft, Traffic
from fedrun.runtime.fake import FakeFailure, FakeWorkers


def square(worker_id, comp, arg):
    return arg * arg


@pytest.fixture
def closing():
    pools = []
    yield pools.append
    for pool in pools:
        pool.close()


def test_results_come_back_in_argument_order_whoever_finishes_first(closing):
    def slow_for_small(worker_id, comp, arg):
        time.sleep(0.05 * (5 - arg))
        return arg * 10

    pool = FakeWorkers(3, slow_for_small)
    closing(pool)
    outcome = pool.dispatcher().map("comp", [0, 1, 2, 3, 4])

    assert outcome.results == [0, 10, 20, 30, 40]
    assert [t.shard for t in outcome.timings] == [0, 1, 2, 3, 4]
    assert all(t.end >= t.start for t in outcome.timings)
    assert outcome.failures == []
    assert outcome.traffic == Traffic(sent=5 * pool.bytes_per_call, received=5)


def test_a_worker_that_finishes_takes_the_next_shard(closing):
    def slow_worker_0(worker_id, comp, arg):
        time.sleep(0.3 if worker_id == "fake-0" else 0.01)
        return arg

    pool = FakeWorkers(2, slow_worker_0)
    closing(pool)
    outcome = pool.dispatcher().map("comp", list(range(6)))

    by_worker = {t.shard: t.worker for t in outcome.timings}
    assert by_worker[0] == "fake-0" and by_worker[1] == "fake-1"  # first come, in slot order
    assert [by_worker[s] for s in range(2, 6)] == ["fake-1"] * 4  # the fast worker takes the rest


def test_a_failed_shard_runs_again_elsewhere_with_the_same_result(closing):
    failed_once = threading.Event()

    def fail_first_call_on_worker_1(worker_id, comp, arg):
        if worker_id == "fake-1" and not failed_once.is_set():
            failed_once.set()
            raise FakeFailure("connection reset")
        return arg * arg

    pool = FakeWorkers(2, fail_first_call_on_worker_1)
    closing(pool)
    dispatcher = pool.dispatcher()
    outcome = dispatcher.map("comp", [1, 2, 3, 4])

    assert outcome.results == [1, 4, 9, 16]
    (failure,) = outcome.failures
    assert failure.worker == "fake-1" and failure.shard == 1 and failure.replaced
    assert "connection reset" in failure.error
    assert pool.replaced == ["fake-1"] and sorted(dispatcher.workers) == ["fake-0", "fake-1"]


def test_a_shard_that_fails_everywhere_stops_after_the_attempt_limit(closing):
    def shard_2_always_fails(worker_id, comp, arg):
        if arg == 2:
            raise FakeFailure("out of memory")
        return arg

    pool = FakeWorkers(2, shard_2_always_fails)
    closing(pool)
    with pytest.raises(FedrunError, match=f"shard 2 failed on {MAX_SHARD_ATTEMPTS} workers.*out of memory"):
        pool.dispatcher().map("comp", [0, 1, 2])
    assert sum(arg == 2 for _, _, arg in pool.calls) == MAX_SHARD_ATTEMPTS


def test_no_worker_left_when_every_worker_fails_and_none_can_be_replaced(closing):
    def always_fails(worker_id, comp, arg):
        raise FakeFailure("gone")

    pool = FakeWorkers(2, always_fails, replaceable=False)
    closing(pool)
    dispatcher = pool.dispatcher()
    with pytest.raises(NoWorkersLeft, match="no worker is left to run shard"):
        dispatcher.map("comp", [0, 1, 2])
    assert dispatcher.workers == []


def test_a_dead_worker_whose_call_hangs_is_noticed_and_its_shard_runs_elsewhere(closing):
    pool = FakeWorkers(
        2,
        lambda worker_id, comp, arg: (
            pool.hang() if worker_id == "fake-0" and "fake-0" not in pool.replaced else arg
        ),
    )
    closing(pool)
    threading.Timer(0.2, pool.dead.add, ["fake-0"]).start()  # its process exits; the RPC never returns

    started = time.monotonic()
    outcome = pool.dispatcher().map("comp", [5, 6])

    assert outcome.results == [5, 6]
    assert [f.worker for f in outcome.failures] == ["fake-0"]
    assert "exited" in outcome.failures[0].error
    assert time.monotonic() - started < 5  # the liveness poll, not the RPC deadline, ended it


def test_a_slot_the_backend_cannot_refill_is_dropped(closing):
    from cluster import WorkerError

    calls = []

    def fail_once(worker_id, comp, arg):
        calls.append(worker_id)
        if len(calls) == 1:
            raise FakeFailure("died")
        return arg

    pool = FakeWorkers(2, fail_once)
    pool.replace_error = WorkerError("no capacity left")
    closing(pool)
    dispatcher = pool.dispatcher()
    outcome = dispatcher.map("comp", [7])

    assert outcome.results == [7] and not outcome.failures[0].replaced
    assert len(dispatcher.workers) == 1


def test_a_programming_error_in_replace_is_not_taken_for_a_worker_problem(closing):
    def fail(worker_id, comp, arg):
        raise FakeFailure("died")

    pool = FakeWorkers(1, fail)
    pool.replace_error = TypeError("replace() got an unexpected keyword argument")
    closing(pool)
    with pytest.raises(TypeError, match="unexpected keyword"):
        pool.dispatcher().map("comp", [1])


def test_recycle_replaces_every_worker_only_where_the_backend_starts_them(closing):
    pool = FakeWorkers(2, square)
    closing(pool)
    dispatcher = pool.dispatcher(can_recycle=True)

    assert dispatcher.recycle() == ["fake-0", "fake-1"]
    assert pool.replaced == ["fake-0", "fake-1"]
    assert all(session.closed for session in pool.sessions)  # the old ones
    assert dispatcher.map("comp", [3]).results == [9]

    static = FakeWorkers(2, square)
    closing(static)
    assert static.dispatcher(can_recycle=False).recycle() == [] and static.replaced == []


def test_call_is_one_computation_on_one_worker(closing):
    pool = FakeWorkers(2, square)
    closing(pool)
    assert pool.dispatcher().call("comp", 12) == 144
    assert len(pool.calls) == 1
