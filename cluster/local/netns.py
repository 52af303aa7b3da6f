"""Private network and pid namespaces for local workers, made with util-linux `unshare`.

TFF's worker_binary listens on all interfaces without authentication and has no bind-address flag.
In a network namespace of its own its only interface is a private loopback, so nobody on the
network can reach it; the coordinator comes in through a Unix socket (cluster.local.isolated_worker).
A user namespace (--map-root-user) makes this work without privileges; a pid namespace with
--kill-child makes one SIGKILL of `unshare` take down everything inside.
"""

from __future__ import annotations

import fcntl
import functools
import shutil
import socket
import struct
import subprocess

UNSHARE_FLAGS = ("--net", "--map-root-user", "--pid", "--fork", "--kill-child=SIGKILL")
_PROBE_TIMEOUT_S = 10.0
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: interface name, then ifr_flags in a 40-byte union


def unshare_command(command: list[str]) -> list[str]:
    """`command` run inside fresh user, network and pid namespaces."""
    return [shutil.which("unshare") or "unshare", *UNSHARE_FLAGS, *command]


@functools.cache
def namespaces_unavailable() -> str | None:
    """Why this machine cannot make the namespaces, or None if it can; probed once per process."""
    if shutil.which("unshare") is None:
        return "the `unshare` program (Debian package util-linux) is not installed"
    try:
        probe = subprocess.run(
            unshare_command(["true"]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`unshare` could not run: {error}"
    if probe.returncode != 0:
        return (
            f"`unshare {' '.join(UNSHARE_FLAGS)}` failed with exit code {probe.returncode}: "
            f"{probe.stderr.strip()} (user namespaces may be disabled: see the sysctls "
            f"user.max_user_namespaces and kernel.unprivileged_userns_clone, or a container's "
            f"seccomp profile)"
        )
    return None


def bring_loopback_up() -> None:
    """Sets `lo` up in the caller's network namespace (a new namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        request = _IFREQ.pack(b"lo", 0)
        flags = _IFREQ.unpack(fcntl.ioctl(control, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(control, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))
