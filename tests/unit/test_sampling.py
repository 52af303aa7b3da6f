import numpy as np
import pytest

from fedrun.selection.sampling import round_rng, sample_clients, shuffle_seeds


def test_same_seed_and_round_gives_same_clients():
    assert np.array_equal(sample_clients(7, 3, 1000, 32), sample_clients(7, 3, 1000, 32))


def test_rounds_and_seeds_draw_fresh_clients():
    a, b, c = sample_clients(7, 3, 1000, 32), sample_clients(7, 4, 1000, 32), sample_clients(8, 3, 1000, 32)
    assert set(a) != set(b) and set(a) != set(c)


@pytest.mark.parametrize("population,k", [(32, 32), (100, 99), (1000, 32), (1_000_000, 512)])
def test_without_replacement_and_in_range(population, k):
    for round_num in range(20):
        clients = sample_clients(0, round_num, population, k)
        assert len(clients) == k
        assert len(set(clients.tolist())) == k
        assert clients.min() >= 0 and clients.max() < population


def test_sampling_is_uniform_over_the_population():
    counts = np.bincount(np.concatenate([sample_clients(1, r, 50, 10) for r in range(2000)]), minlength=50)
    # 2000 rounds x 10 of 50 -> 400 expected each; a randint-style bias toward low ids would show.
    assert counts.min() > 320 and counts.max() < 480


@pytest.mark.parametrize("k", [0, 11])
def test_impossible_sample_is_an_error(k):
    with pytest.raises(ValueError):
        sample_clients(0, 1, 10, k)


def test_shuffle_seeds_depend_on_round_not_on_position_of_call():
    clients = np.array([5, 9, 2])
    assert np.array_equal(shuffle_seeds(0, 1, clients), shuffle_seeds(0, 1, clients))
    assert not np.array_equal(shuffle_seeds(0, 1, clients), shuffle_seeds(0, 2, clients))


@pytest.mark.parametrize(
    "a,b", [("latency_train", "latency_eval"), ("straggler", "stragglers"), ("sample", "sample\0")]
)
def test_streams_whose_names_share_a_prefix_draw_independently(a, b):
    # Stream ids were once the first 8 bytes of the name, so these pairs shared their draws.
    assert round_rng(0, 1, a).integers(2**62) != round_rng(0, 1, b).integers(2**62)
