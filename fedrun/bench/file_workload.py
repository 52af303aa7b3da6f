"""The file-backed workload of `fedrun bench`: the embedded writers written once to an .npz, the
way a user's own data arrives (float32 pixels in [0, 1], one row per example, a client column).

Written into the cache folder and reused, so its converted store is reused too; the content is a
pure function of the number of writers, so a file that is there and readable is the right one.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fedrun.data.files.store import cache_root

ARRAYS = {"x.npy", "y.npy", "client.npy"}


def bench_file(cache_dir: str, writers: int) -> Path:
    """The file of `writers` embedded writers (their training and test examples), written if
    missing or unreadable."""
    path = cache_root(cache_dir) / "bench" / f"digits-{writers}.npz"
    if _readable(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    x, y, client = _examples(writers)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, x=x, y=y, client=client)  # uncompressed: fedrun memory-maps it
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def _readable(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist()) == ARRAYS and archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def _examples(writers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import tensorflow as tf

    from fedrun.data.keys import TEST, TRAIN
    from fedrun.data.synthetic import SyntheticDigits

    source = SyntheticDigits(population=writers, heldout=0)
    xs, ys, clients = [], [], []
    for writer in range(writers):
        for split in (TRAIN, TEST):
            x, y = source.client_examples(tf.constant(source.client_key(writer, split)))
            xs.append(x.numpy())
            ys.append(y.numpy())
            clients.append(np.full(len(ys[-1]), writer, np.int32))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(clients)
