"""One federated computation over a round's clients, sharded across workers.

`up_to_merge` runs per shard (dynamically dispatched), partial aggregates are folded with
`merge` strictly in shard order, so the result does not depend on which worker finished first,
and `after_merge` finishes the computation on the server side. The fold and `after_merge` run
as one call: each call costs a round trip and a few milliseconds of fixed overhead.
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow_federated as tff

from fedrun.runtime.dispatch import Dispatcher, LostCopy, ShardTiming, Traffic, WorkerFailure
from fedrun.selection.sharding import Shard

# Fold computations kept: one per (form, number of shards); runs use one or two shard counts.
_MAX_FOLDS = 16


@dataclass(frozen=True)
class ShardedResult:
    value: Any  # after_merge's result
    partials: list[Any]  # each shard's partial aggregate (up_to_merge's result), in shard order
    timings: list[ShardTiming]  # one per shard, in shard order
    failures: list[WorkerFailure]
    traffic: Traffic
    lost_copies: list[LostCopy]  # speculative copies, or originals, that another attempt beat
    backups: int  # speculative copies started


def run_sharded(
    dispatcher: Dispatcher,
    form: tff.framework.MergeableCompForm,
    server_arg: Any,
    client_keys: Sequence[Any],
    shards: Sequence[Shard],
    preferred: Sequence[str] | None = None,
) -> ShardedResult:
    """`preferred[i]`: the worker meant to run shard i (Dispatcher.map)."""
    return run_sharded_clients(dispatcher, form, server_arg, [client_keys], shards, preferred)


def run_sharded_clients(
    dispatcher: Dispatcher,
    form: tff.framework.MergeableCompForm,
    server_arg: Any,
    client_args: Sequence[Sequence[Any]],
    shards: Sequence[Shard],
    preferred: Sequence[str] | None = None,
) -> ShardedResult:
    """`run_sharded` for a computation with several client-placed parameters (one value per
    client in each of `client_args`), each cut into the same shards."""
    shard_args = [
        [server_arg, *([values[p] for p in shard.positions] for values in client_args)] for shard in shards
    ]
    partials = dispatcher.map(form.up_to_merge, shard_args, preferred)
    finish = dispatcher.map(
        merge_and_finish(form, len(shards)), [[[server_arg, *map(list, client_args)], partials.results]]
    )
    return ShardedResult(
        finish.results[0],
        partials.results,
        partials.timings,
        partials.failures + finish.failures,
        partials.traffic + finish.traffic,
        partials.lost_copies,
        partials.backups,
    )


@functools.lru_cache(maxsize=_MAX_FOLDS)  # a form hashes by identity
def merge_and_finish(form: tff.framework.MergeableCompForm, num_partials: int) -> tff.Computation:
    """`after_merge(arg, merge(...merge(merge(p1, p2), p3)..., pn))` as one computation."""
    partial = tff.FederatedType(form.merge.type_signature.result, tff.SERVER)

    @tff.federated_computation(form.after_merge.type_signature.parameter[0], [partial] * num_partials)
    def finish(original_arg, partials):
        merged = partials[0]
        for index in range(1, num_partials):
            merged = tff.federated_map(form.merge, tff.federated_zip([merged, partials[index]]))
        return form.after_merge(original_arg, merged)

    return finish
