"""Reading device and behaviour traces: FedScale's pickles, as FedScale reads them, and a plain
CSV of the user's own. Every problem names the file and what it should hold.

Loading a pickle runs code from the file: fedrun reads only the paths a user passes
(`--device-trace`, `--availability-trace`), never a file it finds itself.
"""

from __future__ import annotations

import csv
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedrun.errors import FedrunError
from fedrun.system.profiles import Availability

CSV_COLUMNS = ("client", "compute_s_per_example")
_CSV_BANDWIDTH = ("bandwidth_kbps", "download_kbps", "upload_kbps")


def _unpickle(path: Path, what: str) -> Any:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301  (a file the user named; see the module docstring)
    except FileNotFoundError:
        raise FedrunError(f"{what} {path} does not exist: check the path") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as e:
        raise FedrunError(f"{what} {path} is not a readable pickle ({e}): give FedScale's file") from None


def read_device_trace(path: Path) -> dict[int, dict[str, float]]:
    """FedScale's device capacities: {client_id: {'computation': ms per sample, 'communication': kbps}}."""
    raw = _unpickle(path, "device trace")
    if not isinstance(raw, Mapping) or not raw:
        raise FedrunError(
            f"device trace {path} holds {type(raw).__name__}, not FedScale's "
            f"{{client_id: {{'computation': ms, 'communication': kbps}}}}"
        )
    profiles = {}
    for key, entry in raw.items():
        try:
            computation, communication = float(entry["computation"]), float(entry["communication"])
        except (KeyError, TypeError, ValueError):
            raise FedrunError(
                f"device trace {path}: entry {key!r} is {entry!r}, not "
                f"{{'computation': ms per sample, 'communication': kbps}}"
            ) from None
        if not (
            math.isfinite(computation)
            and computation >= 0
            and math.isfinite(communication)
            and communication > 0
        ):
            raise FedrunError(
                f"device trace {path}: entry {key!r} has computation {computation} and "
                f"communication {communication}; both must be finite, bandwidth positive"
            )
        profiles[int(key)] = {"computation": computation, "communication": communication}
    return profiles


def read_availability_trace(path: Path) -> list[Availability]:
    """FedScale's behaviour trace {client_id: {'active': [...], 'inactive': [...], 'finish_time':
    ...}}, in the file's key order (which is how FedScale maps clients onto it)."""
    raw = _unpickle(path, "availability trace")
    if not isinstance(raw, Mapping) or not raw:
        raise FedrunError(
            f"availability trace {path} holds {type(raw).__name__}, not FedScale's "
            f"{{client_id: {{'active': [...], 'inactive': [...], 'finish_time': s}}}}"
        )
    traces = []
    for key, entry in raw.items():
        try:
            active = tuple(float(t) for t in entry["active"])
            inactive = tuple(float(t) for t in entry["inactive"])
            period = float(entry["finish_time"])
        except (KeyError, TypeError, ValueError):
            raise FedrunError(
                f"availability trace {path}: entry {key!r} lacks 'active', 'inactive' "
                f"and 'finish_time' as FedScale writes them"
            ) from None
        if len(active) != len(inactive) or not active:
            raise FedrunError(
                f"availability trace {path}: entry {key!r} has {len(active)} active and "
                f"{len(inactive)} inactive times; they pair up, at least one each"
            )
        traces.append(Availability(active, inactive, period))
    return traces


def read_profile_csv(path: Path) -> tuple[list[dict[str, float]], list[str]]:
    """A CSV with a header `client,compute_s_per_example,bandwidth_kbps[,rtt_s]` (or
    `download_kbps` and `upload_kbps` instead of `bandwidth_kbps`): the rows and their clients."""
    try:
        with open(path, newline="") as f:
            table = list(csv.DictReader(f))
    except FileNotFoundError:
        raise FedrunError(f"device table {path} does not exist: check --device-trace") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FedrunError(f"device table {path} is not a readable CSV ({e})") from None
    fix = (
        "write a header client,compute_s_per_example,bandwidth_kbps (optional: rtt_s; or "
        "download_kbps and upload_kbps) and one row per device"
    )
    if not table:
        raise FedrunError(f"device table {path} has no rows: {fix}")
    columns = set(table[0])
    if not set(CSV_COLUMNS) <= columns or not (
        {"bandwidth_kbps"} <= columns or {"download_kbps", "upload_kbps"} <= columns
    ):
        raise FedrunError(f"device table {path} has columns {sorted(columns)}: {fix}")
    rows, clients = [], []
    for number, line in enumerate(table, 2):
        try:
            row = {
                name: float(line[name])
                for name in (*CSV_COLUMNS[1:], *_CSV_BANDWIDTH, "rtt_s")
                if line.get(name) not in (None, "")
            }
        except ValueError as e:
            raise FedrunError(f"device table {path} line {number}: {e}; values must be numbers") from None
        row.setdefault("download_kbps", row.get("bandwidth_kbps", 0.0))
        row.setdefault("upload_kbps", row.get("bandwidth_kbps", 0.0))
        if row["compute_s_per_example"] < 0 or min(row["download_kbps"], row["upload_kbps"]) <= 0:
            raise FedrunError(
                f"device table {path} line {number}: compute must not be negative and "
                f"bandwidth must be positive"
            )
        rows.append(row)
        clients.append(line["client"])
    return rows, clients
