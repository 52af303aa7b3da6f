"""Small data files in the formats users bring, written here because nothing can be downloaded.

Examples are fedrun's synthetic digits (learnable, non-IID by writer). EMNIST files use TFF's
layouts and TFF's pixel convention (background 1.0); they are written with h5py, sqlite3 and
tf.train.Example directly, not with fedrun's own writer, so reading them tests fedrun's reader.
"""

import sqlite3
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from fedrun.data.synthetic import generate_examples


def writer_examples(writer: int, n: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Writer `writer`'s images [n, 28, 28] and labels [n]; split 0 = train, 1 = test."""
    images, labels = generate_examples(n, 1000 + writer, split)
    return images.numpy(), labels.numpy()


def write_emnist_h5(
    folder: Path, prefix: str = "fed_emnist_digitsonly", writers: int = 40, train: int = 60, test: int = 15
) -> dict[str, Path]:
    """Older TFF's pair PREFIX_{train,test}.h5: groups examples/<writer>/{label, pixels}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, (name, n) in enumerate((("train", train), ("test", test))):
        paths[name] = folder / f"{prefix}_{name}.h5"
        with h5py.File(paths[name], "w") as h5:
            for w in range(writers):
                images, labels = writer_examples(w, n, split)
                group = h5.create_group(f"examples/f{w:04d}_{w % 100:02d}")
                group["label"] = labels.astype(np.int32)
                group["pixels"] = 1.0 - images
    return paths


def emnist_example(pixels: np.ndarray, label: int) -> bytes:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=pixels.ravel())),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
        )
    ).SerializeToString()


def write_emnist_sqlite(folder: Path, writers: int = 12, train: int = 20, test: int = 5) -> Path:
    """TFF 0.87's emnist_all.sqlite: tables examples and client_metadata, digits-only splits."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "emnist_all.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
            "serialized_example_proto BLOB NOT NULL)"
        )
        db.execute(
            "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, "
            "num_examples INTEGER NOT NULL)"
        )
        for split, (name, n) in enumerate((("digits_only_train", train), ("digits_only_test", test))):
            for w in range(writers):
                images, labels = writer_examples(w, n, split)
                rows = [
                    (name, f"f{w:04d}_00", emnist_example(1.0 - x, int(y))) for x, y in zip(images, labels)
                ]
                db.executemany("INSERT INTO examples VALUES (?, ?, ?)", rows)
                db.execute("INSERT INTO client_metadata VALUES (?, ?, ?)", (f"f{w:04d}_00", name, n))
    db.close()
    return path


def write_npz(path: Path, clients: int, per_client: int, first_writer: int = 0) -> Path:
    """An .npz of x [N, 28, 28], y [N], client [N] (string ids), clients' examples interleaved."""
    data = [writer_examples(first_writer + c, per_client, 0) for c in range(clients)]
    x = np.stack([d[0] for d in data], axis=1).reshape(-1, 28, 28)  # example-major: interleaved
    y = np.stack([d[1] for d in data], axis=1).reshape(-1)
    client = np.tile(np.array([f"writer-{first_writer + c}" for c in range(clients)]), per_client)
    np.savez(path, x=x, y=y, client=client)
    return path
