"""The clients of a converted store (fedrun.data.files.store), read on the workers with TF ops: one
`read_file` and two `decode_raw` per client and round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from fedrun.data.files.store import CLIENTS, LABEL_BYTES, META
from fedrun.data.keys import TEST, TRAIN
from fedrun.data.source import ClientDataSource
from fedrun.errors import FedrunError


class ArrayClients(ClientDataSource):
    """The clients of a store. A fixed random subset of `heldout` training clients never trains
    and only evaluates; clients with test examples only are held out too."""

    def __init__(
        self,
        folder: Path,
        origin: str,
        heldout: int,
        scale: float | None,
        summary: str = "",
        partition: np.ndarray | None = None,
        num_classes: int | None = None,
    ):
        meta = json.loads((folder / META).read_text())
        self.summary = summary
        self.partition = partition
        self.folder = folder.resolve()  # workers open it by this path, whatever their working directory
        self.origin = origin  # the user's file, for messages
        self.feature_shape = tuple(meta["feature_shape"])
        self.dtype = np.dtype(meta["dtype"])
        self.num_classes = num_classes or meta["num_classes"]
        self.scale = scale
        self.element_spec = (tf.TensorSpec(self.feature_shape, tf.float32), tf.TensorSpec([], tf.int32))
        with np.load(folder / CLIENTS) as clients:
            ids, self._counts = clients["ids"], {TRAIN: clients["train"], TEST: clients["test"]}
        trainers = np.flatnonzero(self._counts[TRAIN] > 0)
        if not 0 <= heldout < len(trainers):
            raise FedrunError(
                f"{origin} holds {len(trainers)} clients with training examples, so {heldout} "
                f"held-out clients leave none to train: lower --eval-clients (its default, -1, "
                f"holds out a tenth)"
            )
        # Training clients first in an order fixed once, held-out ones last, then test-only ones.
        order = trainers[np.random.default_rng(0).permutation(len(trainers))]
        self._positions = np.concatenate([order, np.flatnonzero(self._counts[TRAIN] == 0)])
        self._ids = ids
        self._population = len(trainers) - heldout

    @property
    def population(self) -> int:
        return self._population

    def heldout_clients(self) -> np.ndarray:
        return np.arange(self._population, len(self._positions))

    def client_name(self, client: int) -> str:
        return str(self._ids[self._positions[client]])

    def num_examples(self, client: int, split: str) -> int:
        return int(self._counts[split][self._positions[client]])

    def client_key(self, client: int, split: str) -> str:
        return f"{split}/{self._positions[client]}.bin:{self.num_examples(client, split)}"

    def client_examples(self, key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        path, count = tf.unstack(tf.strings.split(key, ":"), num=2)
        n = tf.strings.to_number(count, tf.int32)
        content = tf.io.read_file(tf.strings.join([str(self.folder), "/", path]))
        feature_bytes = int(np.prod(self.feature_shape)) * self.dtype.itemsize
        x = tf.io.decode_raw(tf.strings.substr(content, 0, n * feature_bytes), tf.as_dtype(self.dtype))
        y = tf.io.decode_raw(tf.strings.substr(content, n * feature_bytes, n * LABEL_BYTES), tf.int32)
        x = tf.cast(tf.reshape(x, tf.concat([[n], self.feature_shape], 0)), tf.float32)
        if self.scale is not None:
            x = x * self.scale
        return x, y
