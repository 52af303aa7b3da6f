"""A user's own data in an .npz file: arrays `x` (N, ...), `y` (N,) and, for federated data,
`client` (N,). Centralized data (no `client`, or `--partition`) is split into clients by a seeded
partitioner (fedrun.data.files.partition).

Converted once into a client store in the cache folder (fedrun.data.files.arrays), so the workers read
each client's examples themselves, and the data's folder may be read-only. The test examples come
from a second file (`--test-data`: clients found only there are held out and evaluated) or,
without one, are the last fifth of each client's examples in file order. Arrays that numpy saved
uncompressed are read through memory maps: converting a large file holds one client's examples
at a time, not the file.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrun.data.files import partition, scaling
from fedrun.data.files.arrays import ArrayClients
from fedrun.data.files.store import ClientExamples, store_for
from fedrun.data.keys import TEST, TRAIN
from fedrun.data.registry import SourceOptions
from fedrun.errors import FedrunError

TEST_FRACTION = 0.2  # of each client's examples, when there is no test file
HELDOUT_FRACTION = 0.1  # of a file's clients, held out by default (none with a test file)
_HOW = "write it with numpy.savez(path, x=..., y=..., client=...)"
_STATUS = logging.getLogger("fedrun.status")


@dataclass(frozen=True)
class ClientArrays:
    """A file's examples grouped by client: client `ids[i]` holds rows order[starts[i]:starts[i+1]]."""

    x: np.ndarray  # possibly a memory map
    y: np.ndarray
    ids: np.ndarray  # str, sorted
    starts: np.ndarray
    order: np.ndarray  # row indices, grouped by client, each client's in file order
    partition: np.ndarray | None = None  # the client of each example, when --partition split the file

    def client(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[self.starts[i] : self.starts[i + 1]]
        return np.asarray(self.x[rows]), self.y[rows]


def open_npz(options: SourceOptions) -> ArrayClients:
    path = Path(options.data).expanduser()
    test_path = Path(options.test_data).expanduser() if options.test_data else None
    train = load_clients(path, options.partition, options.seed)
    test = load_clients(test_path, "", options.seed) if test_path else None
    labels = np.unique(train.y)
    if test is not None:
        _check_test(path, test_path, train, test, labels)
    scale = scaling.resolve(options.feature_scale, train.x)
    _STATUS.info(
        "%s: %d clients; %s (--feature-scale %s)",
        path,
        len(train.ids),
        scaling.describe(train.x, scale),
        options.feature_scale,
    )
    if scaling.looks_unscaled(train.x, scale):
        logging.getLogger(__name__).warning(
            "%s: %s, far outside [0, 1]; if these are 0-255 pixels, pass --feature-scale %.6g (1/255)",
            path,
            scaling.describe(train.x, scale),
            1 / 255,
        )
    inputs = [path] + ([test_path] if test_path else [])
    seed = options.seed if options.partition else ""  # only a partition depends on the seed
    params = f"test_fraction={TEST_FRACTION}|partition={options.partition}|seed={seed}"
    store = store_for(
        inputs, params, options.cache_dir, lambda: _splits(train, test), train.x.shape[1:], train.x.dtype
    )
    trainers = len(train.ids)
    heldout = (
        options.heldout if options.heldout >= 0 else (0 if test else trainers // round(1 / HELDOUT_FRACTION))
    )
    return ArrayClients(
        store,
        origin=str(path),
        heldout=heldout,
        scale=scale,
        summary=scaling.describe(train.x, scale),
        partition=train.partition,
    )


def load_clients(path: Path, partition_spec: str, seed: int) -> ClientArrays:
    """Reads and checks one .npz file; every problem names the file."""
    x, y, client = _read_arrays(path, partitioned=bool(partition_spec))
    n = len(y) if y.ndim == 1 else -1
    if n < 0 or x.ndim < 1 or x.shape[0] != n or (client is not None and client.shape != (n,)):
        shape = client.shape if client is not None else "none"
        raise FedrunError(
            f"{path}: x {x.shape}, y {y.shape} and client {shape} must hold one "
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
    owner = None
    if partition_spec:
        try:
            owner = partition.partition(y, partition_spec, seed)
        except ValueError as e:
            raise FedrunError(f"--partition: {e}") from None
        client = owner
    elif client.dtype.kind not in "iuUS":
        raise FedrunError(f"{path}: client has dtype {client.dtype}; use integer or string client ids")
    # Integer ids sort as numbers (and cost 8 bytes each, not a string's); stable: a client's
    # examples keep their file order.
    order = np.argsort(client, kind="stable")
    unique, starts = np.unique(client[order], return_index=True)
    return ClientArrays(x, y, unique.astype(str), np.append(starts, n), order, owner)


def _read_arrays(path: Path, partitioned: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        if not zipfile.is_zipfile(path) and _starts_with(path, b"\x93NUMPY"):
            raise FedrunError(f"{path} holds one array, not the arrays x, y and client: {_HOW}")
        with zipfile.ZipFile(path) as archive:
            names = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = {"x", "y"} - set(names) | (set() if partitioned or "client" in names else {"client"})
            if missing:
                hint = (
                    (
                        "; or, for centralized data, split it into clients with --partition iid:N, "
                        "dirichlet:N:ALPHA or shards:N:S"
                    )
                    if missing == {"client"}
                    else ""
                )
                raise FedrunError(
                    f"{path} lacks array(s) {', '.join(sorted(missing))}: x holds the "
                    f"examples, y their integer labels, client their client ids; {_HOW}{hint}"
                )
            x = _member(path, archive, names["x"])
            y = np.asarray(_member(path, archive, names["y"]))
            client = (
                np.asarray(_member(path, archive, names["client"]))
                if "client" in names and not partitioned
                else None
            )
            return x, y, client
    except FileNotFoundError:
        raise FedrunError(f"data file {path} does not exist: check --data / --test-data") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise FedrunError(f"{path} is not a readable .npz file ({e}): {_HOW}") from None


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _member(path: Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One array of the archive: memory-mapped where numpy stored it uncompressed."""
    info = archive.getinfo(name)
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(member)
        header = member.tell()
        if info.compress_type != zipfile.ZIP_STORED or dtype.hasobject:
            member.seek(0)
            return np.lib.format.read_array(member, allow_pickle=False)
    with open(path, "rb") as raw:  # the member's data starts after its local header
        raw.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(raw.read(4), "<u2")
    offset = info.header_offset + 30 + int(name_length) + int(extra_length) + header
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _check_test(
    path: Path, test_path: Path, train: ClientArrays, test: ClientArrays, labels: np.ndarray
) -> None:
    if test.x.shape[1:] != train.x.shape[1:]:
        raise FedrunError(
            f"{test_path}: examples have shape {test.x.shape[1:]} but those in {path} "
            f"have {train.x.shape[1:]}; both files must hold the same kind of example"
        )
    if test.x.dtype != train.x.dtype:
        raise FedrunError(
            f"{test_path}: features are {test.x.dtype} but those in {path} are {train.x.dtype}; "
            f"store both the same way (they are scaled alike)"
        )
    unknown = np.setdiff1d(test.y, labels)
    if len(unknown):
        raise FedrunError(
            f"{test_path}: label(s) {', '.join(map(str, unknown[:5]))} never occur in "
            f"{path}, so the model has no class for them; drop those test examples"
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
