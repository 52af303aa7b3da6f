import numpy as np
import pytest

from fedrun.selection.sharding import make_shards


@pytest.mark.parametrize(
    "num_clients,num_shards", [(1, 1), (1, 4), (32, 1), (32, 2), (32, 3), (33, 8), (7, 7), (5, 9)]
)
def test_every_client_in_exactly_one_shard_in_order(num_clients, num_shards):
    sizes = np.random.default_rng(num_clients).integers(1, 300, size=num_clients)
    shards = make_shards(sizes.tolist(), num_shards)
    positions = [p for s in shards for p in s.positions]
    assert positions == list(range(num_clients))
    assert len(shards) == min(num_shards, num_clients)
    assert all(len(s.positions) >= 1 for s in shards)
    assert [s.index for s in shards] == list(range(len(shards)))


def test_shards_balance_examples_not_client_counts():
    sizes = [1000] + [10] * 199  # one huge client first
    a, b = make_shards(sizes, 2)
    cost = [sum(sizes[p] + 1 for p in s.positions) for s in (a, b)]  # examples + per-client overhead
    assert len(a.positions) == 55 and len(b.positions) == 145  # by count it would be 100 / 100
    assert abs(cost[0] - cost[1]) <= 11  # within one small client


def test_equal_clients_split_evenly():
    shards = make_shards([100] * 32, 4)
    assert [len(s.positions) for s in shards] == [8, 8, 8, 8]


def test_no_clients_no_shards():
    assert make_shards([], 3) == []


def test_shares_size_the_shards_in_order():
    sizes = [10] * 40  # 40 clients of 10 examples: 440 units of work
    shards = make_shards(sizes, 2, shares=[0.8, 0.2])
    assert [len(s.positions) for s in shards] == [32, 8]
    assert shards[0].positions == tuple(range(32))  # contiguous, in sampling order


def test_worker_speeds_give_the_faster_worker_more_and_balance_unmeasured_ones():
    from fedrun.runtime.dispatch import ShardTiming
    from fedrun.runtime.speeds import WorkerSpeeds

    speeds = WorkerSpeeds()
    assert speeds.shares(["a", "b"]) == [0.5, 0.5]  # nothing measured: equal
    sizes = [9] * 20  # 200 units: 100 per shard
    shards = make_shards(sizes, 2)
    speeds.update(shards, [ShardTiming(0, "a", 0.0, 1.0), ShardTiming(1, "b", 0.0, 4.0)], sizes)
    assert speeds.shares(["a", "b"]) == pytest.approx([0.8, 0.2])  # b took 4 times as long
    # An unmeasured worker counts as the median measured one: 1 / 0.025 s per unit beside 100 and 25.
    assert speeds.shares(["a", "b", "c"]) == pytest.approx([100 / 165, 25 / 165, 40 / 165])
