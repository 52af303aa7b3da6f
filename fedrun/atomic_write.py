"""Files replaced whole or not at all, and durably: a reader or a crash sees the old file or the
new one, never half of one."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a temporary file beside `target`, fsync it, rename it over `target`,
    fsync the folder. Concurrent writers of the same target each end with a whole file.

    Raises OSError if the folder is not writable.
    """
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_bytes_atomically(target: Path, payload: bytes) -> None:
    write_atomically(target, lambda tmp: tmp.write_bytes(payload))
