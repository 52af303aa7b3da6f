"""TFF's federated EMNIST (writers as clients) from a local copy in TFF's own file formats.

Nothing is downloaded. TFF 0.87's `emnist.load_data` keeps `emnist_all.sqlite` in `~/.tff`; older
TFF kept HDF5 files (`fed_emnist_digitsonly_train.h5` and `_test.h5`, groups
`examples/<writer>/{pixels,label}`) in `~/.keras/datasets`. Either is converted once into a client
store in the cache folder (fedrun.data.files.arrays): reading TFF's SQLite on the workers parses every
example's tf.Example again in every epoch.
"""

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from fedrun.data.files.arrays import ArrayClients
from fedrun.data.files.store import ClientExamples, store_for
from fedrun.data.keys import TEST, TRAIN
from fedrun.data.registry import SourceOptions
from fedrun.errors import FedrunError

SQL_FILE = "emnist_all.sqlite"
IMAGE_SHAPE = (28, 28)
DEFAULT_DIRS = ("~/.tff", "~/.keras/datasets")  # TFF 0.87's cache, then older TFF's (Keras') cache


@dataclass(frozen=True)
class Variant:
    """Digits only (10 classes) or digits and letters (62 classes)."""

    name: str
    num_classes: int
    sql_splits: tuple[str, str]  # (train, test) split names inside emnist_all.sqlite
    h5_prefix: str  # older TFF's files: PREFIX_train.h5 and PREFIX_test.h5


DIGITS = Variant("emnist", 10, ("digits_only_train", "digits_only_test"), "fed_emnist_digitsonly")
FULL = Variant("emnist-full", 62, ("all_train", "all_test"), "fed_emnist")


def open_digits(options: SourceOptions) -> ArrayClients:
    return open_emnist(DIGITS, options)


def open_full(options: SourceOptions) -> ArrayClients:
    return open_emnist(FULL, options)


def open_emnist(variant: Variant, options: SourceOptions) -> ArrayClients:
    folders = [Path(d).expanduser() for d in ([options.data_dir] if options.data_dir else DEFAULT_DIRS)]
    for folder in folders:
        sql = folder / SQL_FILE
        if sql.exists():
            store = store_for(
                [sql],
                variant.name,
                options.cache_dir,
                lambda sql=sql: _sql_clients(variant, sql),
                IMAGE_SHAPE,
                np.float32,
            )
            return _clients(store, sql, variant, options)
        train, test = (folder / f"{variant.h5_prefix}_{split}.h5" for split in (TRAIN, TEST))
        if train.exists() or test.exists():
            for path, other in ((train, test), (test, train)):
                if not path.exists():
                    raise FedrunError(
                        f"found {other} but not {path}: EMNIST's HDF5 files come in pairs; put "
                        f"both files from {variant.h5_prefix}.tar.bz2 in {path.parent}"
                    )
            store = store_for(
                [train, test],
                variant.name,
                options.cache_dir,
                lambda train=train, test=test: _h5_clients(variant, train, test),
                IMAGE_SHAPE,
                np.float32,
            )
            return _clients(store, train, variant, options)
    raise FedrunError(
        f"federated EMNIST not found: looked for {SQL_FILE} (TFF 0.87's file) and "
        f"{variant.h5_prefix}_train.h5 with _test.h5 (older TFF's files) in "
        f"{', '.join(map(str, folders))}. fedrun downloads nothing: on a machine with internet run "
        f"python -c 'import tensorflow_federated as tff; tff.simulation.datasets.emnist.load_data()' "
        f"(it writes ~/.tff/{SQL_FILE}) and copy that file here, or pass its folder with --data-dir"
    )


def _clients(store: Path, origin: Path, variant: Variant, options: SourceOptions) -> ArrayClients:
    heldout = options.heldout if options.heldout >= 0 else 32  # EMNIST has thousands of writers
    return ArrayClients(
        store,
        origin=str(origin),
        heldout=heldout,
        scale=None,
        num_classes=variant.num_classes,
        summary="EMNIST pixels float32 in [0, 1] (background 1), not scaled",
    )


def _sql_clients(variant: Variant, path: Path):
    """Every writer's examples from TFF's SqlClientData file, in row order within a writer."""
    features = {
        "pixels": tf.io.FixedLenFeature(IMAGE_SHAPE, tf.float32),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            for split, name in zip((TRAIN, TEST), variant.sql_splits):
                rows = db.execute(
                    "SELECT client_id, serialized_example_proto FROM examples WHERE split_name = ? "
                    "ORDER BY client_id, rowid",
                    (name,),
                )
                writer, protos = None, []
                for client_id, proto in rows:
                    if client_id != writer and protos:
                        yield _parsed(split, writer, protos, features, path, variant)
                        protos = []
                    writer = client_id
                    protos.append(proto)
                if protos:
                    yield _parsed(split, writer, protos, features, path, variant)
    except sqlite3.DatabaseError as e:
        raise FedrunError(
            f"{path} is not a TFF client-data SQLite file ({e}): replace it with the file TFF downloads"
        ) from None


def _parsed(
    split: str, writer: str, protos: list[bytes], features: dict, path: Path, variant: Variant
) -> ClientExamples:
    try:
        parsed = tf.io.parse_example(tf.constant(protos), features)
    except tf.errors.InvalidArgumentError as e:
        raise FedrunError(
            f"{path}: writer {writer}'s examples are not EMNIST's tf.Examples ({e.message})"
        ) from None
    labels = parsed["label"].numpy()
    _check_labels(f"{path}: writer {writer}", labels, variant)
    return ClientExamples(split, writer, parsed["pixels"].numpy(), labels)


def _check_labels(where: str, labels: np.ndarray, variant: Variant) -> None:
    bad = labels[(labels < 0) | (labels >= variant.num_classes)]
    if len(bad):
        raise FedrunError(
            f"{where}: label {bad[0]} is outside 0..{variant.num_classes - 1} of "
            f"--data {variant.name}; use the file for that variant"
        )


def _h5_clients(variant: Variant, train: Path, test: Path):
    """Every writer's examples, checked, from TFF's HDF5 layout examples/<writer>/{pixels,label}."""
    try:
        import h5py
    except ImportError:
        raise FedrunError("reading EMNIST's HDF5 files needs h5py: pip install h5py") from None
    for split, path in ((TRAIN, train), (TEST, test)):
        try:
            h5 = h5py.File(path, "r")
        except OSError as e:
            raise FedrunError(
                f"{path} is not a readable HDF5 file ({e}): extract it again from {variant.h5_prefix}.tar.bz2"
            ) from None
        with h5:
            examples = h5.get("examples")
            if not isinstance(examples, h5py.Group):
                raise FedrunError(
                    f"{path} has no group 'examples': it is not one of TFF's federated EMNIST files"
                )
            for writer in sorted(examples):
                yield ClientExamples(split, writer, *_writer_arrays(path, writer, examples[writer], variant))


def _writer_arrays(path: Path, writer: str, group, variant: Variant) -> tuple[np.ndarray, np.ndarray]:
    where = f"{path}: examples/{writer}"
    try:
        pixels, labels = group["pixels"][()], group["label"][()]
    except (KeyError, TypeError, ValueError):
        raise FedrunError(f"{where} lacks the datasets 'pixels' and 'label' of TFF's EMNIST layout") from None
    if pixels.shape[1:] != IMAGE_SHAPE or labels.shape != pixels.shape[:1]:
        raise FedrunError(
            f"{where}: pixels {pixels.shape} and label {labels.shape} should be (n, 28, 28) and (n,)"
        )
    if len(labels) == 0:
        raise FedrunError(f"{where} holds no examples: remove the writer's empty group")
    _check_labels(where, labels, variant)
    return pixels.astype(np.float32), labels
