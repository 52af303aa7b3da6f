"""One federated computation over a round's clients, sharded across workers.

`up_to_merge` runs per shard (dynamically dispatched), partial aggregates are folded with
`merge` strictly in shard order, so the result does not depend on which worker finished first,
and `after_merge` finishes the computation on the server side.
"""

from collections.abc import Sequence
from typing import Any

import tensorflow_federated as tff

from fedrun.dispatch import Dispatcher, ShardTiming
from fedrun.sharding import Shard


def run_sharded(dispatcher: Dispatcher, form: tff.framework.MergeableCompForm, server_arg: Any,
                client_keys: Sequence[str], shards: Sequence[Shard]) -> tuple[Any, list[ShardTiming]]:
    shard_args = [[server_arg, [client_keys[p] for p in shard.positions]] for shard in shards]
    partials, timings = dispatcher.map(form.up_to_merge, shard_args)
    merged = partials[0]
    for partial in partials[1:]:
        merged = dispatcher.call(form.merge, [merged, partial])
    result = dispatcher.call(form.after_merge, [[server_arg, list(client_keys)], merged])
    return result, timings
