"""Which clients take part in a round: pure, seeded functions of (seed, round)."""

import hashlib

import numpy as np


def round_rng(seed: int, round_num: int, stream: str) -> np.random.Generator:
    """An independent generator per (seed, round, purpose), so streams never share draws."""
    return np.random.default_rng([seed, round_num, _stream_id(stream)])


def _stream_id(stream: str) -> int:
    """64 bits of a hash of the whole name: names that share a prefix get unrelated streams."""
    return int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")


def sample_clients(seed: int, round_num: int, population: int, k: int) -> np.ndarray:
    """K distinct client indices for a round, uniformly without replacement.

    numpy's `choice(replace=False)` switches to a hash-set (Floyd) algorithm for large
    populations, so a 1,000,000-client population costs O(K) per round, not O(population).
    """
    if not 0 < k <= population:
        raise ValueError(f"cannot sample {k} clients from a population of {population}")
    return round_rng(seed, round_num, "sample").choice(population, size=k, replace=False)


def shuffle_seeds(seed: int, round_num: int, clients: np.ndarray) -> np.ndarray:
    """Per-client dataset shuffle seeds for a round, so a client's batches do not depend on
    which worker or shard trains it."""
    rng = round_rng(seed, round_num, "shuffle")
    return rng.integers(0, 2**31 - 1, size=len(clients), dtype=np.int64)
