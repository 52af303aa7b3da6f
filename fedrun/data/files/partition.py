"""Centralized data split into clients the way FL papers split it: pure, seeded functions of the
labels that give every example to exactly one client.

- `iid:N`: N clients of (nearly) equal size, examples dealt at random;
- `dirichlet:N:ALPHA`: label skew (Hsu et al. 2019, Flower Datasets' DirichletPartitioner): each
  label's examples are divided among the clients in proportions drawn from Dirichlet(ALPHA);
  small ALPHA gives clients that hold few labels;
- `shards:N:S`: McMahan et al. 2017's pathological split: examples sorted by label, cut into
  N x S shards, each client dealt S of them.
"""

from __future__ import annotations

import numpy as np

from fedrun.errors import FedrunError

KINDS = ("iid", "dirichlet", "shards")


def parse(spec: str) -> tuple[str, int, float]:
    """("iid"|"dirichlet"|"shards", clients, alpha or shards per client); ValueError naming the form."""
    kind, *numbers = spec.split(":")
    forms = {"iid": "iid:N", "dirichlet": "dirichlet:N:ALPHA", "shards": "shards:N:S"}
    if kind not in forms or len(numbers) != forms[kind].count(":"):
        raise ValueError(
            f"partition {spec!r} is not one of {', '.join(forms.values())} (e.g. dirichlet:100:0.5)"
        )
    try:
        clients = int(numbers[0])
        parameter = float(numbers[1]) if len(numbers) > 1 else 0.0
    except ValueError:
        raise ValueError(f"partition {spec!r}: N must be an integer and ALPHA or S a number") from None
    if clients < 1 or (kind == "dirichlet" and parameter <= 0) or (kind == "shards" and parameter < 1):
        raise ValueError(f"partition {spec!r}: N must be at least 1, ALPHA positive, S at least 1")
    return kind, clients, parameter


def partition(labels: np.ndarray, spec: str, seed: int) -> np.ndarray:
    """The client (0..N-1) of every example."""
    kind, clients, parameter = parse(spec)
    n = len(labels)
    if clients > n:
        raise FedrunError(f"partition {spec}: {clients} clients but only {n} examples")
    rng = np.random.default_rng([seed, len(spec), *spec.encode()])
    owner = np.empty(n, np.int64)
    if kind == "iid":
        owner[rng.permutation(n)] = np.arange(n) % clients
    elif kind == "shards":
        per_client = int(parameter)
        order = np.argsort(labels, kind="stable")
        shards = np.array_split(order, clients * per_client)
        for shard, client in zip(shards, rng.permutation(np.repeat(np.arange(clients), per_client))):
            owner[shard] = client
    else:
        for label in np.unique(labels):
            examples = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(clients, parameter))
            cuts = (np.cumsum(shares)[:-1] * len(examples)).astype(np.int64)
            for client, part in enumerate(np.split(examples, cuts)):
                owner[part] = client
    return owner
