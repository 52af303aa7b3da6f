"""The backend's own temporary folders (worker sockets, private logs), marked with their owner so
that the next backend removes those whose coordinator died without removing them (SIGKILL)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psutil

_OWNER = "owner"  # "<pid> <process start time>": a pid alone may have been reused since


def make(prefix: str) -> Path:
    """A new folder (0700, in the temporary directory) owned by this process."""
    remove_orphans(prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    (folder / _OWNER).write_text(_identity(os.getpid()))
    return folder


def remove_orphans(prefix: str) -> list[Path]:
    """Removes this user's folders of `prefix` whose owning process has gone; returns them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            if folder.stat().st_uid != os.getuid() or not folder.is_dir():
                continue
            pid, _, started = (folder / _OWNER).read_text().partition(" ")
        except (OSError, ValueError):
            continue  # not one of ours, or being made right now
        if not pid.isdigit() or _identity(int(pid)) != f"{pid} {started}":
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _identity(pid: int) -> str:
    try:
        return f"{pid} {psutil.Process(pid).create_time()}"
    except psutil.Error:
        return f"{pid} gone"
