"""Client data in TFF's SQLite client-data format, read on the workers with TF ops only.

The format is `tff.simulation.datasets.SqlClientData`'s: a table `examples(split_name, client_id,
serialized_example_proto)` of tf.Example protos and a table `client_metadata(client_id,
split_name, num_examples)`. TFF 0.87 ships federated EMNIST in it; other formats are converted
to it once. A client's examples are named by their rowid range, which SQLite finds in its rowid
B-tree with no index and which carries no quoting risk, so a key is two integers.
"""

import contextlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from fedrun.atomic_write import write_atomically
from fedrun.data.keys import TEST, TRAIN
from fedrun.data.source import ClientDataSource
from fedrun.errors import FedrunError

_BATCH_ROWS = 10_000  # rows per executemany when writing


@dataclass(frozen=True)
class ExampleFormat:
    """How one example is stored: tf.Example feature names and the features' shape."""

    features: str
    feature_shape: tuple[int, ...]
    label: str

    def parse(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_single_example(
            serialized,
            {
                self.features: tf.io.FixedLenFeature(self.feature_shape, tf.float32),
                self.label: tf.io.FixedLenFeature([], tf.int64),
            },
        )
        return parsed[self.features], tf.cast(parsed[self.label], tf.int32)

    def serialize(self, features: np.ndarray, label: int) -> bytes:
        return tf.train.Example(
            features=tf.train.Features(
                feature={
                    self.features: tf.train.Feature(float_list=tf.train.FloatList(value=features.ravel())),
                    self.label: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }
            )
        ).SerializeToString()


@dataclass(frozen=True)
class ClientExamples:
    """One client's examples in one split, as a converter hands them to `write_store`."""

    split: str
    client_id: str
    features: np.ndarray  # [n, *feature_shape]
    labels: np.ndarray  # [n]


def cached_path(inputs: list[Path], params: str, suffix: str) -> Path:
    """Where a file derived from `inputs` is cached: next to the first input, named by the
    inputs' names, sizes and modification times, so an edited input gets a fresh conversion."""
    digest = hashlib.sha256(params.encode())
    for path in inputs:
        stat = path.stat()
        digest.update(f"|{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return inputs[0].with_name(f"{inputs[0].name}.{digest.hexdigest()[:12]}.{suffix}")


def write_cache(target: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)`, then put it in place atomically: a reader never sees a half-written file, and
    concurrent runs converting the same input both end with a whole one."""
    try:
        write_atomically(target, write)
    except OSError as e:
        raise FedrunError(
            f"cannot write {target.name} in {target.parent} ({e.strerror}): fedrun keeps "
            f"the converted data next to its source; copy the data to a writable "
            f"directory"
        ) from None


def write_store(path: Path, clients: Iterable[ClientExamples], fmt: ExampleFormat) -> None:
    """Writes a TFF SqlClientData file, each client's split in one contiguous run of rows."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:  # closed, and committed once
        db.execute(
            "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
            "serialized_example_proto BLOB NOT NULL)"
        )
        db.execute(
            "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, "
            "num_examples INTEGER NOT NULL)"
        )
        for client in clients:
            rows = [
                (client.split, client.client_id, fmt.serialize(x, int(y)))
                for x, y in zip(client.features, client.labels)
            ]
            for start in range(0, len(rows), _BATCH_ROWS):
                db.executemany("INSERT INTO examples VALUES (?, ?, ?)", rows[start : start + _BATCH_ROWS])
            db.execute(
                "INSERT INTO client_metadata VALUES (?, ?, ?)", (client.client_id, client.split, len(rows))
            )


@dataclass(frozen=True)
class SplitRows:
    """Where each client's examples of one split are: rows first..last (inclusive)."""

    client_ids: np.ndarray  # str, sorted
    first: np.ndarray  # int64
    last: np.ndarray

    def rows_of(self, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first, last) per client; a client without examples in this split gets an empty range."""
        if not len(self.client_ids):
            return np.zeros(len(client_ids), np.int64), np.full(len(client_ids), -1, np.int64)
        at = np.searchsorted(self.client_ids, client_ids).clip(max=len(self.client_ids) - 1)
        found = self.client_ids[at] == client_ids
        return np.where(found, self.first[at], 0), np.where(found, self.last[at], -1)

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, client_ids=self.client_ids, first=self.first, last=self.last)


def read_rows(store: Path, split: str) -> SplitRows:
    """Each client's row range in a split, checked to be contiguous; cached beside the store,
    because for a large file not written by fedrun it costs one pass over the table."""
    cache = cached_path([store], split, "fedrun-rows.npz")
    if cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            return SplitRows(saved["client_ids"], saved["first"], saved["last"])
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            found = db.execute(
                "SELECT client_id, MIN(rowid), MAX(rowid), COUNT(*) FROM examples WHERE split_name = ? "
                "GROUP BY client_id ORDER BY client_id",
                (split,),
            ).fetchall()
    except sqlite3.DatabaseError as e:
        raise FedrunError(
            f"{store} is not a TFF client-data SQLite file ({e}): replace it with the "
            f"file TFF downloads, or delete it so fedrun converts its source again"
        ) from None
    scattered = [cid for cid, first, last, count in found if last - first + 1 != count]
    if scattered:
        raise FedrunError(
            f"{store}: the '{split}' examples of client(s) {', '.join(scattered[:3])} are "
            f"not stored in one run of rows, which fedrun needs to name them by row range; "
            f"rewrite the file client by client (e.g. tff.simulation.datasets."
            f"save_to_sql_client_data)"
        )
    rows = SplitRows(
        np.array([r[0] for r in found], dtype=str),
        np.array([r[1] for r in found], np.int64),
        np.array([r[2] for r in found], np.int64),
    )
    write_cache(cache, rows.save)
    return rows


class SqlClients(ClientDataSource):
    """The clients of a TFF client-data SQLite file. A fixed random subset of `heldout` clients
    never trains and only evaluates; the rest are the training population."""

    def __init__(
        self,
        store: Path,
        splits: dict[str, str],
        fmt: ExampleFormat,
        num_classes: int,
        heldout: int = 0,
        seed: int = 0,
    ):
        self.store = store.resolve()  # workers open it by this path, whatever their working directory
        self.format = fmt
        self.num_classes = num_classes
        self.element_spec = (tf.TensorSpec(fmt.feature_shape, tf.float32), tf.TensorSpec([], tf.int32))
        train = read_rows(store, splits[TRAIN])
        test = read_rows(store, splits[TEST])
        strangers = np.setdiff1d(test.client_ids, train.client_ids)
        if len(strangers):
            raise FedrunError(
                f"{store}: client(s) {', '.join(strangers[:3])} have test examples but no "
                f"training examples: give every client training examples"
            )
        if not 0 <= heldout < len(train.client_ids):
            raise FedrunError(
                f"{store} holds {len(train.client_ids)} clients, so {heldout} held-out "
                f"clients leave none to train: lower --eval-clients"
            )
        # Training clients first, held-out clients last, in an order fixed by `seed`.
        self._ids = train.client_ids[np.random.default_rng(seed).permutation(len(train.client_ids))]
        self._population = len(self._ids) - heldout
        self._rows = {TRAIN: train.rows_of(self._ids), TEST: test.rows_of(self._ids)}

    @property
    def population(self) -> int:
        return self._population

    def heldout_clients(self) -> np.ndarray:
        return np.arange(self._population, len(self._ids))

    def client_name(self, client: int) -> str:
        return str(self._ids[client])

    def num_examples(self, client: int, split: str) -> int:
        first, last = self._rows[split]
        return int(last[client] - first[client] + 1)

    def client_key(self, client: int, split: str) -> str:
        first, last = self._rows[split]
        return f"{first[client]}:{last[client]}"

    def client_dataset(self, key: tf.Tensor) -> tf.data.Dataset:
        first, last = tf.unstack(tf.strings.split(key, ":"), num=2)
        query = tf.strings.join(
            [
                "SELECT serialized_example_proto FROM examples WHERE rowid BETWEEN ",
                first,
                " AND ",
                last,
                " ORDER BY rowid",
            ]
        )
        rows = tf.data.experimental.SqlDataset("sqlite", str(self.store), query, (tf.string,))
        return rows.map(self.format.parse)
