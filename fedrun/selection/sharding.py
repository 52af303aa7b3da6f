"""How a round's clients are cut into shards for the workers: a pure function."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shard:
    """A unit of dispatch: some of the round's clients, trained together by one worker."""

    index: int
    positions: tuple[int, ...]  # positions in the round's client list, ascending


def make_shards(num_examples: Sequence[int], num_shards: int) -> list[Shard]:
    """Cut a round's clients into `num_shards` contiguous, cost-balanced shards.

    Contiguous in sampling order, so folding shard results in shard order adds client
    updates in the same order as a single-process run; boundaries are placed where the
    running example count crosses each 1/num_shards of the total.
    """
    n = len(num_examples)
    if n == 0:
        return []
    num_shards = max(1, min(num_shards, n))
    cost = np.cumsum(np.asarray(num_examples, dtype=np.float64) + 1.0)  # +1: per-client overhead
    targets = cost[-1] * np.arange(1, num_shards) / num_shards
    cuts = np.searchsorted(cost, targets, side="left") + 1
    # Every shard gets at least one client: clamp cuts to be strictly increasing inside (0, n).
    bounds = [0]
    for i, cut in enumerate(cuts):
        low = bounds[-1] + 1
        high = n - (num_shards - 1 - i)
        bounds.append(int(min(max(cut, low), high)))
    bounds.append(n)
    return [Shard(i, tuple(range(a, b))) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
