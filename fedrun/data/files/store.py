"""Users' client data, converted once into a store the workers read in one call per client.
Free of TensorFlow: `fedrun cache` lists and removes stores without loading it; the workers'
reader is fedrun.data.files.arrays.

A converted source is a folder with one small file per client and split: the client's features
as raw bytes in their own dtype (uint8 images stay a byte per pixel) followed by its labels as
int32. A worker builds a client's dataset from its key with `tf.io.read_file` and `decode_raw`:
the examples are read and decoded once per round, as one tensor, however many epochs the client
trains (a per-example reader, such as TFF's SQLite format, parses every example again in every
epoch). Rows keep the file's order, so shuffling gives the batches it always gave.

Stores live in a cache folder (`--cache-dir`, by default `$XDG_CACHE_HOME/fedrun` or
`~/.cache/fedrun`), never beside the user's data, which may be read-only. A store is named by
its source files' names, sizes and modification times and the conversion's parameters, built in
a temporary folder and renamed into place whole; one that is incomplete, from another version or
whose files have the wrong size is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrun.data.keys import TEST, TRAIN
from fedrun.errors import FedrunError

FORMAT_VERSION = 1
META, CLIENTS = "meta.json", "clients.npz"
LABEL_BYTES = 4  # int32
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientExamples:
    """One client's examples in one split, as a converter hands them over."""

    split: str
    client_id: str
    features: np.ndarray  # [n, *feature_shape]
    labels: np.ndarray  # [n]


def cache_root(cache_dir: str = "") -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedrun"


def store_for(
    inputs: list[Path],
    params: str,
    cache_dir: str,
    build: Callable[[], Iterable[ClientExamples]],
    feature_shape: tuple[int, ...],
    dtype: np.dtype,
) -> Path:
    """The store of `inputs` converted with `params`: reused when whole, else (re)built."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}|{params}".encode())
    for path in inputs:
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    root = cache_root(cache_dir)
    folder = root / f"{inputs[0].name}.{digest.hexdigest()[:16]}"
    problem = _damage(folder)
    if problem is None:
        return folder
    if folder.exists():
        _LOG.warning("the converted copy of %s in %s is %s; converting it again", inputs[0], folder, problem)
        shutil.rmtree(folder, ignore_errors=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}.building-"))
    except OSError as e:
        raise FedrunError(
            f"cannot write the converted copy of {inputs[0]} to the cache folder {root} "
            f"({e.strerror}): choose a writable --cache-dir"
        ) from None
    try:
        write_store(building, build(), feature_shape, dtype)
        try:
            building.rename(folder)
        except OSError:  # another run converted the same source meanwhile: its store will do
            if _damage(folder) is not None:
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def write_store(
    folder: Path, clients: Iterable[ClientExamples], feature_shape: tuple[int, ...], dtype: np.dtype
) -> None:
    """Writes each client's splits; the last file written, meta.json, marks the store whole."""
    ids: list[str] = []
    index: dict[str, int] = {}
    counts = {TRAIN: [], TEST: []}
    labels: list[np.ndarray] = []
    for split in (TRAIN, TEST):
        (folder / split).mkdir()
    for client in clients:
        if client.client_id not in index:
            index[client.client_id] = len(ids)
            ids.append(client.client_id)
            for split in (TRAIN, TEST):
                counts[split].append(0)
        position = index[client.client_id]
        x = np.ascontiguousarray(client.features, dtype=dtype)
        y = np.ascontiguousarray(client.labels, dtype=np.int32)
        counts[client.split][position] = len(y)
        (folder / client.split / f"{position}.bin").write_bytes(x.tobytes() + y.tobytes())
        labels.append(y)
    for split in (TRAIN, TEST):  # a client without examples in a split gets an empty file
        for position in range(len(ids)):
            (folder / split / f"{position}.bin").touch()
    np.savez(
        folder / CLIENTS,
        ids=np.array(ids, dtype=str),
        train=np.array(counts[TRAIN], np.int64),
        test=np.array(counts[TEST], np.int64),
    )
    num_classes = int(max((y.max() for y in labels if len(y)), default=-1)) + 1
    (folder / META).write_text(
        json.dumps(
            {
                "version": FORMAT_VERSION,
                "feature_shape": list(feature_shape),
                "dtype": np.dtype(dtype).str,
                "num_classes": num_classes,
            }
        )
    )


def _damage(folder: Path) -> str | None:
    """Why the store cannot be used as it is, or None if it can."""
    try:
        meta = json.loads((folder / META).read_text())
        if meta.get("version") != FORMAT_VERSION:
            return f"from another fedrun version (format {meta.get('version')})"
        record = int(np.prod(meta["feature_shape"])) * np.dtype(meta["dtype"]).itemsize + LABEL_BYTES
        with np.load(folder / CLIENTS) as clients:
            for split in (TRAIN, TEST):
                for position, count in enumerate(clients[split]):
                    if (folder / split / f"{position}.bin").stat().st_size != count * record:
                        return f"damaged ({split}/{position}.bin has the wrong size)"
    except FileNotFoundError:
        return "incomplete" if folder.exists() else "missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable ({e})"
    return None


@dataclass(frozen=True)
class StoredSource:
    name: str  # the source file's name and the conversion's hash
    bytes: int
    modified: float  # seconds since the epoch


def stored_sources(cache_dir: str = "") -> list[StoredSource]:
    """The conversions in the cache folder, oldest first."""
    root = cache_root(cache_dir)
    found = []
    for folder in sorted(root.glob("*")) if root.exists() else []:
        if folder.is_dir() and not folder.name.startswith("."):
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            found.append(
                StoredSource(
                    folder.name, size, (folder / META).stat().st_mtime if (folder / META).exists() else 0
                )
            )
    return sorted(found, key=lambda s: s.modified)


def remove_stored(cache_dir: str = "", names: Iterable[str] = ()) -> list[str]:
    """Removes the named conversions (all, if none is named); they are rebuilt when next needed."""
    root = cache_root(cache_dir)
    chosen = set(names) or {s.name for s in stored_sources(cache_dir)}
    unknown = chosen - {s.name for s in stored_sources(cache_dir)}
    if unknown:
        raise FedrunError(
            f"no conversion {', '.join(sorted(unknown))} in {root}: `fedrun cache list` shows them"
        )
    for name in sorted(chosen):
        shutil.rmtree(root / name)
    return sorted(chosen)
