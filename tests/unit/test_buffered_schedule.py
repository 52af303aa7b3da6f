"""Buffered-async's schedule and staleness weights: pure, seeded decisions pinned without a worker.
The system model is a stand-in (times given per client, tests/unit/test_system.py's GivenTimes);
selection is the real uniform selector over a stand-in source of equal clients."""

import math

import numpy as np
import pytest

from fedrun.asynchrony.schedule import BufferedSchedule
from fedrun.asynchrony.staleness import staleness_weighting
from fedrun.errors import FedrunError
from fedrun.selection.sampling import sample_clients, shuffle_seeds
from fedrun.selection.selector import AvailableSelector, UniformSelector
from tests.unit.test_system import GivenTimes, lognormal

POPULATION = 50


class EqualClients:
    """A source of POPULATION clients with 10 examples each."""

    population = POPULATION

    def num_examples(self, client: int, split: str) -> int:
        return 10

    def client_key(self, client: int, split: str) -> str:
        return f"{split}/{client}"


def schedule(system, seed=0, buffer_size=4, concurrency=8, max_staleness=0, dropout=0.0) -> BufferedSchedule:
    selector = UniformSelector(EqualClients(), seed, concurrency)
    return BufferedSchedule(
        system,
        selector.sample,
        selector.cohort,
        buffer_size=buffer_size,
        concurrency=concurrency,
        max_staleness=max_staleness,
        dropout=dropout,
        seed=seed,
    )


def updates(plan: BufferedSchedule, count: int):
    return [plan.next_update() for _ in range(count)]


class Lognormal:
    """The real lognormal model's times for these equal clients."""

    def __init__(self, seed=0):
        self._model = lognormal(seed)
        self.has_availability = False

    def client_time(self, client, examples):
        return self._model.client_time(client, examples)


def test_staleness_weights_against_a_hand_computation():
    sqrt, constant, poly = (staleness_weighting(s) for s in ("sqrt", "constant", "polynomial:2"))
    assert [sqrt(s) for s in (0, 1, 3, 8)] == pytest.approx([1.0, 1 / math.sqrt(2), 0.5, 1 / 3])
    assert [constant(s) for s in (0, 5)] == [1.0, 1.0]
    assert [poly(s) for s in (0, 1, 3)] == pytest.approx([1.0, 0.25, 1 / 16])
    assert staleness_weighting("polynomial:0")(7) == 1.0
    for bad in ("linear", "polynomial", "polynomial:-1", "polynomial:x", "polynomial:nan"):
        with pytest.raises(ValueError, match="sqrt, constant or polynomial"):
            staleness_weighting(bad)


def test_equal_times_and_b_equal_c_make_every_update_a_synchronous_round():
    plan = schedule(GivenTimes(dict.fromkeys(range(POPULATION), 2.0)), seed=3, buffer_size=6, concurrency=6)
    for number, update in enumerate(updates(plan, 4), start=1):
        expected = sample_clients(3, number, POPULATION, 6)
        assert list(update.cohort.clients) == list(expected)
        seeds = shuffle_seeds(3, number, expected)
        assert update.cohort.keys == [f"{s}|train/{c}" for s, c in zip(seeds, expected)]
        assert [update.staleness(f) for f in update.results] == [0] * 6
        assert update.clock_s == pytest.approx(2.0 * number) and update.since_s == pytest.approx(2.0)
        assert update.version == number and update.started == 6 and not update.discarded


def test_the_schedule_is_a_function_of_the_seed():
    first = [(u.cohort.keys, u.clock_s) for u in updates(schedule(Lognormal(0), seed=1), 6)]
    again = [(u.cohort.keys, u.clock_s) for u in updates(schedule(Lognormal(0), seed=1), 6)]
    other = [(u.cohort.keys, u.clock_s) for u in updates(schedule(Lognormal(0), seed=2), 6)]
    assert first == again and first != other


def test_concurrency_buffer_and_versions_hold_on_every_update():
    plan = schedule(Lognormal(0), buffer_size=4, concurrency=8)
    started = 0
    for update in updates(plan, 10):
        started += update.started
        assert len(update.results) == 4 and update.in_flight <= 8
        # a result trains from a version older than the one it lands in, and clients never overlap
        assert all(0 <= update.staleness(f) for f in update.results)
        assert all(f.start_s + f.time.total_s <= update.clock_s + 1e-9 for f in update.results)
        versions = [f.version for f in update.results]
        assert versions == sorted(versions)
        assert {v for v, _ in update.groups()} == set(versions)
    assert started == 8 + 10 * 4 - 1  # the first C, then one per arrival but the last update's
    assert plan.versions_in_use() <= set(range(plan.version + 1))


def test_results_older_than_max_staleness_are_discarded_and_counted():
    # client 0 takes 10 s, the others 1 s: by the time client 0 reports, ~15 versions passed
    seconds = {c: 1.0 for c in range(POPULATION)} | {0: 10.0}
    slow = schedule(GivenTimes(seconds), buffer_size=2, concurrency=4, max_staleness=3)
    seen = updates(slow, 100)
    discarded = [(f.client, reason) for u in seen for f, reason in u.discarded]
    assert ("stale" in {r for _, r in discarded}) and all(c == 0 for c, _ in discarded)
    assert all(u.staleness(f) <= 3 + 1 for u in seen for f in u.results)  # +1: it waited one update
    unlimited = schedule(GivenTimes(seconds), buffer_size=2, concurrency=4)
    kept = updates(unlimited, 100)
    assert not any(u.discarded for u in kept)
    assert max(u.staleness(f) for u in kept for f in u.results if f.client == 0) > 3


def test_dropout_discards_results_at_their_finish():
    plan = schedule(Lognormal(0), buffer_size=4, concurrency=8, dropout=0.3)
    seen = updates(plan, 20)
    reasons = [reason for u in seen for _, reason in u.discarded]
    assert reasons and set(reasons) == {"dropout"}
    assert all(len(u.results) == 4 for u in seen)


def test_availability_is_respected_at_start_and_finish():
    # even clients go offline at t=5 s: started before and finishing after, their results are lost
    seconds = {c: 1.0 + (c % 7) for c in range(POPULATION)}
    offline = {c: 5.0 for c in range(0, POPULATION, 2)}
    system = GivenTimes(seconds, offline)
    available = AvailableSelector(EqualClients(), 0, 8, system.available)
    plan = BufferedSchedule(
        system,
        available.sample,
        available.cohort,
        buffer_size=4,
        concurrency=8,
        max_staleness=0,
        dropout=0.0,
        seed=0,
    )
    seen = updates(plan, 10)
    lost = [f for u in seen for f, reason in u.discarded if reason == "unavailable"]
    assert lost and all(f.client % 2 == 0 and f.finish_s > 5.0 for f in lost)
    assert all(f.client % 2 == 1 for u in seen for f in u.results if f.start_s > 5.0)


def test_a_restored_schedule_continues_exactly():
    plan = schedule(Lognormal(0), buffer_size=3, concurrency=7, max_staleness=2, dropout=0.1)
    updates(plan, 5)
    saved = plan.state()
    rest = [(u.cohort.keys, u.clock_s, u.discarded) for u in updates(plan, 5)]
    resumed = schedule(Lognormal(0), buffer_size=3, concurrency=7, max_staleness=2, dropout=0.1)
    resumed.restore(saved)
    assert [(u.cohort.keys, u.clock_s, u.discarded) for u in updates(resumed, 5)] == rest


def test_no_client_online_moves_the_clock_until_one_is():
    # every client offline until t=600 s: the first clients start then
    class LateDevices(GivenTimes):
        def available(self, client, t):
            return t >= 600.0

    system = LateDevices(dict.fromkeys(range(POPULATION), 1.0), {0: 0.0})
    selector = AvailableSelector(EqualClients(), 0, 4, system.available)
    plan = BufferedSchedule(
        system,
        selector.sample,
        selector.cohort,
        buffer_size=4,
        concurrency=4,
        max_staleness=0,
        dropout=0.0,
        seed=0,
    )
    update = plan.next_update()
    assert min(f.start_s for f in update.results) >= 600.0
    assert np.isclose(update.clock_s, min(f.start_s for f in update.results) + 1.0)


def test_a_schedule_whose_results_never_count_stops_with_a_clear_error():
    plan = schedule(Lognormal(0), buffer_size=2, concurrency=2, dropout=0.999)
    with pytest.raises(FedrunError, match="results in a row did not count.*lower --dropout"):
        plan.next_update()


def test_slots_left_empty_are_tried_again_while_others_train():
    # only client 1 is ever online before t = 120 s; it takes 1000 s: the other slot must not wait
    # for it, but look again every minute and start someone once devices come online
    class FewOnline(GivenTimes):
        def available(self, client, t):
            return client == 1 or t >= 120.0

    seconds = dict.fromkeys(range(POPULATION), 1.0) | {1: 1000.0}
    system = FewOnline(seconds, {0: math.inf})
    selector = AvailableSelector(EqualClients(), 0, 2, system.available)
    plan = BufferedSchedule(
        system,
        selector.sample,
        selector.cohort,
        buffer_size=1,
        concurrency=2,
        max_staleness=0,
        dropout=0.0,
        seed=0,
    )
    update = plan.next_update()
    assert update.results[0].client != 1 and 120.0 <= update.results[0].start_s <= 181.0
