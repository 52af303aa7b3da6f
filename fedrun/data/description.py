"""What a source's clients hold, described from their examples: the label mix of a few training
clients (the non-IID-ness a user should see before trusting a run's numbers)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fedrun.data.keys import TRAIN
from fedrun.data.source import ClientDataSource
from fedrun.selection.sampling import sample_clients

SHOWN_CLIENTS = 40


def label_mix(source: ClientDataSource, seed: int = 0) -> dict:
    """{"clients": names, "labels": [[count per class] per client]} for a fixed sample of clients."""
    clients = np.sort(sample_clients(seed, 0, source.population, min(SHOWN_CLIENTS, source.population)))
    counts = []
    for client in clients:
        _, labels = source.client_examples(tf.constant(source.client_key(int(client), TRAIN)))
        counts.append(np.bincount(labels.numpy(), minlength=source.num_classes).tolist())
    return {"clients": [source.client_name(int(c)) for c in clients], "labels": counts}
