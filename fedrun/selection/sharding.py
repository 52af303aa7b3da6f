"""How a round's clients are cut into shards for the workers: a pure function."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# equal: shards of equal work, taken by whichever worker is idle; speed: one per worker, sized by
# its measured speed (runtime.speeds).
SHARD_SIZINGS = ("equal", "speed")


@dataclass(frozen=True)
class Shard:
    """A unit of dispatch: some of the round's clients, trained together by one worker."""

    index: int
    positions: tuple[int, ...]  # positions in the round's client list, ascending


def client_costs(num_examples: Sequence[int]) -> np.ndarray:
    """A client's work in a shard: its examples, plus one for its fixed cost."""
    return np.asarray(num_examples, dtype=np.float64) + 1.0


def make_shards(
    num_examples: Sequence[int], num_shards: int, shares: Sequence[float] | None = None
) -> list[Shard]:
    """Cut a round's clients into `num_shards` contiguous, cost-balanced shards; with `shares`
    (one per shard), shard i gets that share of the cost rather than an equal one.

    Contiguous in sampling order, so folding shard results in shard order adds client
    updates in the same order as a single-process run; boundaries are placed where the
    running example count crosses each shard's cumulative share of the total.
    """
    n = len(num_examples)
    if n == 0:
        return []
    num_shards = max(1, min(num_shards, n))
    cost = np.cumsum(client_costs(num_examples))
    if shares is None:
        targets = cost[-1] * np.arange(1, num_shards) / num_shards
    else:
        weights = np.asarray(shares[:num_shards], dtype=np.float64)
        targets = cost[-1] * np.cumsum(weights)[:-1] / weights.sum()
    cuts = np.searchsorted(cost, targets, side="left") + 1
    # Every shard gets at least one client: clamp cuts to be strictly increasing inside (0, n).
    bounds = [0]
    for i, cut in enumerate(cuts):
        low = bounds[-1] + 1
        high = n - (num_shards - 1 - i)
        bounds.append(int(min(max(cut, low), high)))
    bounds.append(n)
    return [Shard(i, tuple(range(a, b))) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
