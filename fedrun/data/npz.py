"""A user's own federated data in an .npz file: arrays `x` (N, ...), `y` (N,) and `client` (N,).

Converted once to TFF's SQLite client-data format beside the file (see client_store), so the
workers read each client's examples themselves. The test examples come from a second file
(`--test-data`) or, without one, are the last fifth of each client's examples in file order.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrun.data.client_store import (
    ClientExamples,
    ExampleFormat,
    SqlClients,
    cached_path,
    write_cache,
    write_store,
)
from fedrun.data.keys import TEST, TRAIN
from fedrun.data.registry import SourceOptions
from fedrun.errors import FedrunError

TEST_FRACTION = 0.2  # of each client's examples, when there is no test file
_FORMAT_NAMES = {"features": "x", "label": "y"}


@dataclass(frozen=True)
class ClientArrays:
    """A file's examples grouped by client: client `ids[i]` holds rows starts[i]:starts[i+1]."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray  # str, sorted
    starts: np.ndarray

    def client(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(self.starts[i], self.starts[i + 1])
        return self.x[rows], self.y[rows]


def open_npz(options: SourceOptions) -> SqlClients:
    path = Path(options.data).expanduser()
    train = load_clients(path)
    test = load_clients(Path(options.test_data).expanduser()) if options.test_data else None
    labels = np.unique(train.y)
    if test is not None:
        _check_test(path, Path(options.test_data), train, test, labels)
    fmt = ExampleFormat(feature_shape=train.x.shape[1:], **_FORMAT_NAMES)
    inputs = [path] + ([Path(options.test_data).expanduser()] if test is not None else [])
    store = cached_path(inputs, f"test_fraction={TEST_FRACTION}", "fedrun.sqlite")
    if not store.exists():
        write_cache(store, lambda tmp: write_store(tmp, _splits(train, test), fmt))
    return SqlClients(
        store, {TRAIN: TRAIN, TEST: TEST}, fmt, num_classes=int(labels[-1]) + 1, heldout=options.heldout
    )


def load_clients(path: Path) -> ClientArrays:
    """Reads and checks one .npz file; every problem names the file."""
    x, y, client = _read_arrays(path)
    n = len(y) if y.ndim == 1 else -1
    if n < 0 or client.shape != (n,) or x.ndim < 1 or x.shape[0] != n:
        raise FedrunError(
            f"{path}: x {x.shape}, y {y.shape} and client {client.shape} must hold one "
            f"entry per example: shapes (N, ...), (N,) and (N,)"
        )
    if n == 0:
        raise FedrunError(f"{path} holds no examples: give every client at least one")
    if not np.issubdtype(x.dtype, np.number) or x.dtype.kind == "c":
        raise FedrunError(f"{path}: x has dtype {x.dtype}; store the features as real numbers")
    if not np.issubdtype(y.dtype, np.integer):
        raise FedrunError(f"{path}: y has dtype {y.dtype}; store the labels as integers 0..classes-1")
    if y.min() < 0:
        raise FedrunError(f"{path}: label {y.min()} is negative; labels must be 0..classes-1")
    if client.dtype.kind not in "iuUS":
        raise FedrunError(f"{path}: client has dtype {client.dtype}; use integer or string client ids")
    ids = client.astype(str)
    order = np.argsort(ids, kind="stable")  # stable: a client's examples keep their file order
    unique, starts = np.unique(ids[order], return_index=True)
    return ClientArrays(x[order], y[order], unique, np.append(starts, n))


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    how = "write it with numpy.savez(path, x=..., y=..., client=...)"
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise FedrunError(f"{path} holds one array, not the arrays x, y and client: {how}")
        with data:
            missing = {"x", "y", "client"} - set(data.files)
            if missing:
                raise FedrunError(
                    f"{path} lacks array(s) {', '.join(sorted(missing))}: x holds the "
                    f"examples, y their integer labels, client their client ids; {how}"
                )
            return data["x"], data["y"], data["client"]
    except FileNotFoundError:
        raise FedrunError(f"data file {path} does not exist: check --data / --test-data") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise FedrunError(f"{path} is not a readable .npz file ({e}): {how}") from None


def _check_test(
    path: Path, test_path: Path, train: ClientArrays, test: ClientArrays, labels: np.ndarray
) -> None:
    if test.x.shape[1:] != train.x.shape[1:]:
        raise FedrunError(
            f"{test_path}: examples have shape {test.x.shape[1:]} but those in {path} "
            f"have {train.x.shape[1:]}; both files must hold the same kind of example"
        )
    unknown = np.setdiff1d(test.y, labels)
    if len(unknown):
        raise FedrunError(
            f"{test_path}: label(s) {', '.join(map(str, unknown[:5]))} never occur in "
            f"{path}, so the model has no class for them; drop those test examples"
        )
    strangers = np.setdiff1d(test.ids, train.ids)
    if len(strangers):
        raise FedrunError(
            f"{test_path}: client(s) {', '.join(strangers[:3])} have no examples in {path}; "
            f"every test client must also be a training client"
        )


def _splits(train: ClientArrays, test: ClientArrays | None):
    """Each client's train examples, then its test examples (a file, or its last fifth)."""
    for i, client_id in enumerate(train.ids):
        x, y = train.client(i)
        if test is None:
            cut = len(y) - int(len(y) * TEST_FRACTION)
            yield ClientExamples(TRAIN, client_id, x[:cut], y[:cut])
            yield ClientExamples(TEST, client_id, x[cut:], y[cut:])
        else:
            yield ClientExamples(TRAIN, client_id, x, y)
    if test is not None:
        for i, client_id in enumerate(test.ids):
            yield ClientExamples(TEST, client_id, *test.client(i))
