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


# --- speculative copies (MapReduce's backup tasks) ----------------------------------------------


def slow_worker(pool, slow="fake-1", seconds=20.0):
    """Work that takes `seconds` on the slow worker and 50 ms elsewhere, unless cancelled."""

    def work(worker_id, comp, arg):
        pool.busy(worker_id, seconds if worker_id == slow else 0.05)
        return arg * 10

    return work


def test_a_slow_shard_gets_a_copy_on_an_idle_worker_and_the_first_result_counts(closing):
    pool = FakeWorkers(2, lambda *call: work(*call))
    work = slow_worker(pool)
    closing(pool)
    dispatcher = pool.dispatcher(speculation=1.5)
    started = time.monotonic()
    outcome = dispatcher.map("comp", [1, 2])

    assert outcome.results == [10, 20]
    assert time.monotonic() - started < 5  # not the slow worker's 20 s: its call was cancelled
    assert outcome.backups == 1
    assert [(t.shard, t.worker, t.backup) for t in outcome.timings] == [
        (0, "fake-0", False),
        (1, "fake-0", True),
    ]
    (lost,) = outcome.lost_copies
    assert (lost.shard, lost.worker, lost.backup) == (1, "fake-1", False)
    assert pool.cancels == ["fake-1"]
    # The cancelled worker keeps its place: no failure, nothing replaced, it takes the next call.
    assert (
        outcome.failures == [] and pool.replaced == [] and sorted(dispatcher.workers) == ["fake-0", "fake-1"]
    )
    pool.work = square
    assert dispatcher.map("comp", [3, 4]).results == [9, 16]


def test_no_copy_while_shards_wait_or_without_speculation(closing):
    calls = []

    def work(worker_id, comp, arg):
        calls.append((worker_id, arg))
        time.sleep(0.6 if worker_id == "fake-1" and arg == 1 else 0.05)
        return arg

    pool = FakeWorkers(2, work)
    closing(pool)
    outcome = pool.dispatcher().map("comp", [0, 1, 2, 3])
    assert outcome.backups == 0 and outcome.lost_copies == []
    assert sorted(arg for _, arg in calls) == [0, 1, 2, 3]  # each shard ran once

    calls.clear()
    outcome = pool.dispatcher(speculation=1.5).map("comp", [0, 1, 2, 3])
    # Shards 2 and 3 waited while shard 1 ran long: the idle worker took them, not a copy; once
    # nothing waited, shard 1 (still running) was copied.
    assert sorted(arg for _, arg in calls[:4]) == [0, 1, 2, 3]
    assert outcome.results == [0, 1, 2, 3]


def test_a_copy_that_would_finish_later_is_not_started_before_the_threshold(closing):
    def work(worker_id, comp, arg):
        time.sleep(0.3 if arg == 1 else 0.25)
        return arg

    pool = FakeWorkers(2, work)
    closing(pool)
    outcome = pool.dispatcher(speculation=1.5).map("comp", [0, 1])
    assert outcome.backups == 0 and outcome.results == [0, 1]  # 0.3 s < 1.5 x 0.25 s


def test_the_original_dying_while_its_copy_runs_is_handled_once(closing):
    def work(worker_id, comp, arg):
        if worker_id == "fake-1" and arg == 2 and "fake-1" not in pool.replaced:
            pool.hang()  # the original, on a worker about to die
        pool.busy(worker_id, 0.3 if arg == 2 else 0.05)
        return arg

    pool = FakeWorkers(2, work)
    closing(pool)
    dispatcher = pool.dispatcher(speculation=1.5)
    threading.Timer(0.5, pool.dead.add, ["fake-1"]).start()  # after the copy has started
    outcome = dispatcher.map("comp", [1, 2])

    assert outcome.results == [1, 2]
    assert [(f.worker, f.shard) for f in outcome.failures] == [("fake-1", 1)]
    assert sum(arg == 2 for _, _, arg in pool.calls) == 2  # the original and its copy: not a third
    assert outcome.timings[1].backup and outcome.timings[1].worker == "fake-0"
    assert pool.replaced == ["fake-1"]


def test_the_copy_dying_leaves_the_original_to_finish(closing):
    def work(worker_id, comp, arg):
        if worker_id == "fake-0" and arg == 2:
            raise FakeFailure("the copy's worker died")
        pool.busy(worker_id, 0.5 if arg == 2 else 0.05)
        return arg

    pool = FakeWorkers(2, work)
    closing(pool)
    outcome = pool.dispatcher(speculation=1.5).map("comp", [1, 2])

    assert outcome.results == [1, 2]
    assert [(f.worker, f.shard) for f in outcome.failures] == [("fake-0", 1)]
    assert sum(arg == 2 for _, _, arg in pool.calls) == 2
    assert not outcome.timings[1].backup and outcome.timings[1].worker == "fake-1"


def test_a_cancelled_call_that_does_not_end_loses_its_worker_in_bounded_time(closing, monkeypatch):
    from fedrun.runtime import dispatch

    monkeypatch.setattr(dispatch, "CANCEL_GRACE_S", 0.5)

    def work(worker_id, comp, arg):
        if worker_id == "fake-1" and "fake-1" not in pool.replaced:
            pool.hang()  # ignores the cancel, as a wedged RPC would
        pool.busy(worker_id, 0.05)
        return arg

    pool = FakeWorkers(2, work)
    closing(pool)
    started = time.monotonic()
    outcome = pool.dispatcher(speculation=1.5).map("comp", [1, 2])

    assert outcome.results == [1, 2] and time.monotonic() - started < 5
    (failure,) = outcome.failures
    assert failure.worker == "fake-1" and "did not end" in failure.error
    assert pool.replaced == ["fake-1"]


def test_shards_go_to_their_preferred_worker_while_it_is_in_the_pool(closing):
    pool = FakeWorkers(3, square)
    closing(pool)
    dispatcher = pool.dispatcher()
    outcome = dispatcher.map("comp", [1, 2, 3, 4], preferred=["fake-2", "fake-2", "fake-0", "gone-9"])
    by_shard = {t.shard: t.worker for t in outcome.timings}
    assert by_shard[0] == by_shard[1] == "fake-2" and by_shard[2] == "fake-0"
    assert outcome.results == [1, 4, 9, 16]  # shard 3's worker is not in the pool: anyone took it
