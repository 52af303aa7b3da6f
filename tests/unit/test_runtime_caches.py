"""The coordinator's caches of compiled computations are bounded: a process that builds many
algorithms (a sweep, the test suite) keeps a fixed number, not every one it ever compiled."""

import numpy as np
import tensorflow_federated as tff

from fedrun.runtime import remote, sharded


def _distinct_computations(count: int) -> list[tff.Computation]:
    def constant(value: int) -> tff.Computation:
        return tff.tensorflow.computation(lambda: np.int32(value))

    return [constant(value) for value in range(count)]


def test_compiled_computations_are_bounded_and_recently_used_kept():
    computations = _distinct_computations(remote.MAX_COMPILED + 8)
    for comp in computations:
        remote.compile_for_workers(comp)
    assert len(remote._COMPILED) <= remote.MAX_COMPILED
    assert computations[-1] in remote._COMPILED and computations[0] not in remote._COMPILED
    again = remote.compile_for_workers(computations[-1])
    assert again is remote._COMPILED[computations[-1]]  # a hit, not a second compilation


def test_fold_computations_are_bounded():
    assert sharded.merge_and_finish.cache_info().maxsize is not None
