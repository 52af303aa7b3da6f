"""System models, trace readers, availability-aware selection and round policies: pure decisions,
pinned without a worker. A stand-in system model (times given per client) is used where a test
needs exact times; the real models are tested for their formulas and determinism."""

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from fedrun.config import PolicyConfig
from fedrun.errors import FedrunError
from fedrun.selection.cohort import Cohort
from fedrun.selection.policy import DevicePolicy
from fedrun.selection.selector import AvailableSelector
from fedrun.system.models import (
    FEDSCALE_DEFAULT_PROFILE,
    LognormalModel,
    ProfileTable,
    TraceModel,
    fedscale_entry,
    fedscale_profile,
)
from fedrun.system.profiles import Availability, ClientTime, TrainingTask
from fedrun.system.traces import read_availability_trace, read_device_trace, read_profile_csv
from tests.support.configs import flat_config

TASK = TrainingTask(epochs=5, batch_size=32, model_kbit=245.3)


class GivenTimes:
    """A system model whose client c takes `seconds[c]` (all compute) and may go offline."""

    def __init__(self, seconds: dict[int, float], offline_after: dict[int, float] | None = None):
        self.seconds = seconds
        self.offline_after = offline_after or {}

    @property
    def has_availability(self) -> bool:
        return bool(self.offline_after)

    def client_time(self, client: int, examples: int) -> ClientTime:
        return ClientTime(0.0, self.seconds[client], 0.0)

    def available(self, client: int, t: float) -> bool:
        return t <= self.offline_after.get(client, math.inf)


def cohort(clients: list[int]) -> Cohort:
    return Cohort(np.array(clients), [10] * len(clients), [f"key-{c}" for c in clients])


def lognormal(seed: int = 0, **overrides) -> LognormalModel:
    options = dict(
        compute_s_per_example=0.005, compute_sigma=0.6, bandwidth_kbps=5000.0, bandwidth_sigma=0.6, rtt_s=0.05
    )
    return LognormalModel(TASK, seed, **{**options, **overrides})


def test_lognormal_times_are_a_pure_function_of_seed_and_client():
    a, b, other = lognormal(3), lognormal(3), lognormal(4)
    times = [a.client_time(c, 100) for c in range(50)]
    assert times == [b.client_time(c, 100) for c in range(50)]
    assert times != [other.client_time(c, 100) for c in range(50)]
    # in any order, and however many clients were asked about before
    assert [b.client_time(c, 100) for c in reversed(range(50))] == times[::-1]


def test_lognormal_has_the_configured_median_and_the_time_formula():
    model = lognormal(compute_sigma=0.6, bandwidth_sigma=0.0, rtt_s=0.05, bandwidth_kbps=1000.0)
    speeds = np.array([model.seconds_per_example(c) for c in range(4000)])
    assert np.median(speeds) == pytest.approx(0.005, rel=0.05)
    assert np.std(np.log(speeds)) == pytest.approx(0.6, rel=0.05)
    time = model.client_time(7, examples=120)
    assert time.compute_s == pytest.approx(model.seconds_per_example(7) * 120 * 5)
    assert time.download_s == time.upload_s == pytest.approx(0.05 + 245.3 / 1000.0)


def _pickle(path: Path, value) -> Path:
    path.write_bytes(pickle.dumps(value))
    return path


def test_fedscale_traces_give_fedscales_formula_and_client_mapping(tmp_path):
    # FedScale's client_device_capacity: ids from 1, ms per sample and kbps.
    trace = {
        1: {"computation": 40.0, "communication": 2000.0},
        2: {"computation": 10.0, "communication": 500.0},
        3: {"computation": 25.0, "communication": 8000.0},
    }
    profiles = read_device_trace(_pickle(tmp_path / "client_device_capacity", trace))
    model = TraceModel(TASK, profiles)
    # fedrun client i is FedScale client i + 1, which takes entry (i + 1) % len(trace).
    assert fedscale_profile(profiles, 0) == trace[1] and fedscale_profile(profiles, 1) == trace[2]
    assert fedscale_profile(profiles, 2) == FEDSCALE_DEFAULT_PROFILE  # (3 % 3) = 0: FedScale's default
    examples = 100
    local_steps = math.ceil(examples / 32) * 5  # batches of the round
    time = model.client_time(1, examples)
    # ClientMetadata.get_completion_time: 3 x batch x steps x ms / 1000, (up + down kbit) / kbps
    assert time.compute_s == pytest.approx(3.0 * 32 * local_steps * 10.0 / 1000.0)
    assert time.download_s + time.upload_s == pytest.approx((245.3 + 245.3) / 500.0)


def test_fedscale_availability_is_read_and_mapped_as_fedscale_does(tmp_path):
    behaviour = {
        "u7": {"active": [0, 100], "inactive": [50, 150], "finish_time": 200, "model": "x"},
        "u2": {"active": [10], "inactive": [20], "finish_time": 30},
    }
    traces = read_availability_trace(_pickle(tmp_path / "client_behave_trace", behaviour))
    assert traces[0] == Availability((0.0, 100.0), (50.0, 150.0), 200.0)
    assert fedscale_entry(traces, 0) is traces[1] and fedscale_entry(traces, 1) is traces[0]
    u7 = traces[0]
    assert [u7.available_at(t) for t in (0, 49, 51, 120, 199, 210, 260)] == [
        True,
        True,
        False,
        True,
        False,
        True,
        False,
    ]


@pytest.mark.parametrize(
    "payload,message",
    [
        ([1, 2], "not FedScale's"),
        ({1: {"computation": 1.0}}, "entry 1"),
        ({1: {"computation": 1.0, "communication": 0.0}}, "bandwidth positive"),
    ],
)
def test_bad_device_traces_name_the_file_and_the_form(tmp_path, payload, message):
    with pytest.raises(FedrunError, match=message):
        read_device_trace(_pickle(tmp_path / "trace.pkl", payload))
    (tmp_path / "junk.pkl").write_text("not a pickle")
    with pytest.raises(FedrunError, match="junk.pkl is not a readable pickle"):
        read_device_trace(tmp_path / "junk.pkl")
    with pytest.raises(FedrunError, match="does not exist"):
        read_device_trace(tmp_path / "missing.pkl")


def test_csv_profiles_by_client_name_and_the_rest_in_turn(tmp_path):
    table = tmp_path / "devices.csv"
    table.write_text(
        "client,compute_s_per_example,bandwidth_kbps,rtt_s\nalice,0.01,1000,0.1\nbob,0.002,8000,\n"
    )
    rows, names = read_profile_csv(table)
    model = ProfileTable(
        TASK,
        rows,
        {name: row for row, name in enumerate(names)},
        name_of=lambda client: {0: "bob", 1: "carol"}.get(client, "x"),
    )
    assert model.row(0)["compute_s_per_example"] == 0.002  # by name
    assert model.row(1) == rows[1 % 2]  # carol: not in the file, row index mod rows
    time = model.client_time(0, examples=10)
    assert time.compute_s == pytest.approx(0.002 * 10 * 5) and time.upload_s == pytest.approx(245.3 / 8000)
    table.write_text("client,speed\nalice,1\n")
    with pytest.raises(FedrunError, match="write a header client,compute_s_per_example,bandwidth_kbps"):
        read_profile_csv(table)


def test_availability_selection_draws_only_available_clients_in_o_of_k():
    asked = []

    def available(client: int, t: float) -> bool:
        asked.append(client)
        return client % 3 == 0  # a third of the population is online

    class Population:
        population = 1_000_000

        def num_examples(self, client, split):
            return 10

        def client_key(self, client, split):
            return str(client)

    chosen = AvailableSelector(Population(), 5, 64, available).select(round_num=2, now_s=100.0)
    assert len(chosen.clients) == 64 and all(c % 3 == 0 for c in chosen.clients)
    assert len(set(chosen.clients)) == 64
    assert len(asked) < 50 * 64  # not a scan of the million
    again = AvailableSelector(Population(), 5, 64, available).select(round_num=2, now_s=100.0)
    assert list(again.clients) == list(chosen.clients)


def test_a_deadline_drops_exactly_the_clients_past_it():
    system = GivenTimes({1: 3.0, 2: 9.0, 3: 5.0, 4: 5.01})
    plan = DevicePolicy(system, PolicyConfig(deadline_s=5.0), target=4, seed=0).plan(
        1, cohort([1, 2, 3, 4]), 0.0
    )
    assert plan.simulated.reasons == (None, "deadline", None, "deadline")
    assert plan.counted == (0, 2)
    assert plan.simulated.round_s == 5.0  # fewer than needed: the round closes at the deadline


def test_over_selection_keeps_exactly_the_first_k_to_finish():
    system = GivenTimes({c: t for c, t in zip(range(10), [7, 1, 9, 3, 3, 8, 2, 6, 5, 4])})
    config = PolicyConfig(over_selection=1.3)
    assert config.selected(7) == 10
    plan = DevicePolicy(system, config, target=7, seed=0).plan(1, cohort(list(range(10))), 0.0)
    assert sorted(plan.counted) == [1, 3, 4, 6, 7, 8, 9]  # times 1, 3, 3, 2, 6, 5, 4
    assert [plan.simulated.reasons[p] for p in (0, 2, 5)] == ["over_selection"] * 3
    assert plan.simulated.round_s == 6.0  # the 7th report
    assert [int(c) for c in plan.training.clients] == [1, 3, 4, 6, 7, 8, 9]  # in cohort order


def test_dropout_is_seeded_and_about_its_probability():
    system = GivenTimes({c: 1.0 for c in range(1000)})
    policy = DevicePolicy(system, PolicyConfig(dropout=0.2), target=1000, seed=11)
    first = policy.plan(3, cohort(list(range(1000))), 0.0)
    assert first.simulated.reasons == policy.plan(3, cohort(list(range(1000))), 0.0).simulated.reasons
    assert first.simulated.reasons != policy.plan(4, cohort(list(range(1000))), 0.0).simulated.reasons
    assert 150 < first.simulated.reasons.count("dropout") < 250


def test_too_few_reports_abandon_the_round_and_train_no_one():
    system = GivenTimes({1: 1.0, 2: 20.0, 3: 30.0})
    plan = DevicePolicy(system, PolicyConfig(deadline_s=10.0, min_reporting=2), target=3, seed=0).plan(
        1, cohort([1, 2, 3]), 0.0
    )
    assert plan.simulated.abandoned and plan.counted == () and len(plan.training.clients) == 0
    assert plan.simulated.round_s == 10.0  # the time was spent all the same


def test_a_client_offline_before_it_finishes_is_lost():
    system = GivenTimes({1: 2.0, 2: 2.0}, offline_after={2: 101.0})
    plan = DevicePolicy(system, PolicyConfig(), target=2, seed=0).plan(1, cohort([1, 2]), now_s=100.0)
    assert plan.simulated.reasons == (None, "unavailable")


def test_without_a_policy_every_client_counts_and_the_round_waits_for_the_slowest():
    system = GivenTimes({1: 4.0, 2: 1.0, 3: 2.5})
    plan = DevicePolicy(system, PolicyConfig(), target=3, seed=0).plan(1, cohort([1, 2, 3]), 0.0)
    assert plan.counted == (0, 1, 2) and plan.simulated.round_s == 4.0


@pytest.mark.parametrize(
    "options,message",
    [
        ({"deadline_s": 5.0}, "choose a --system-model"),
        ({"system_model": "fedscale"}, "needs --device-trace"),
        ({"system_model": "lognormal", "device_trace": "x.csv"}, "takes no --device-trace"),
        ({"system_model": "lognormal", "over_selection": 0.9}, "over_selection must be at least 1"),
        ({"system_model": "lognormal", "dropout": 1.0}, "dropout must be a probability"),
        ({"system_model": "none", "speed_data_skew": 1.0}, "need a --system-model"),
        (
            {"system_model": "lognormal", "min_reporting": 40},
            "min_reporting \\(40\\) exceeds clients_per_round",
        ),
        (
            {"system_model": "lognormal", "over_selection": 2.0, "clients_per_round": 40, "population": 60},
            "raise --population \\(or --over-selection\\)",
        ),
    ],
)
def test_system_and_policy_options_are_checked(options, message):
    with pytest.raises(FedrunError, match=message):
        flat_config(**options)
