"""The TCP ports a process listens on, read from /proc.

A worker started with --port=0 logs ":0", so its real port is only visible in the kernel's socket
tables. Matching the table rows against the process's own socket inodes keeps another process on
a shared (SO_REUSEPORT) port from being mistaken for it.
"""

from __future__ import annotations

import os
from pathlib import Path

_LISTEN_STATE = "0A"  # TCP_LISTEN in the kernel's hex notation
_SOCKET_LINK = ("socket:[", "]")


def parse_listening_sockets(table: str) -> dict[int, int]:
    """Maps socket inode to local port for the LISTEN rows of a /proc/net/tcp or tcp6 table."""
    listening = {}
    for row in table.splitlines()[1:]:
        fields = row.split()
        if len(fields) > 9 and fields[3] == _LISTEN_STATE:
            port_hex = fields[1].rsplit(":", 1)[1]
            listening[int(fields[9])] = int(port_hex, 16)
    return listening


def parse_socket_inode(fd_link: str) -> int | None:
    """The inode of a /proc/<pid>/fd link such as 'socket:[5018]'; None for other files."""
    prefix, suffix = _SOCKET_LINK
    if fd_link.startswith(prefix) and fd_link.endswith(suffix):
        return int(fd_link[len(prefix) : -len(suffix)])
    return None


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets the process holds open."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in os.listdir(fd_dir):
        try:
            inode = parse_socket_inode(os.readlink(fd_dir / fd))
        except FileNotFoundError:  # closed while we looked
            continue
        if inode is not None:
            inodes.add(inode)
    return inodes


def listening_ports(pid: int) -> set[int]:
    """Ports on which the process itself holds a listening IPv4 or IPv6 TCP socket.

    Raises OSError if the process is gone.
    """
    own = socket_inodes(pid)
    ports = set()
    for table_name in ("tcp6", "tcp"):
        table = Path(f"/proc/{pid}/net/{table_name}")
        if table.exists():  # tcp6 is absent on kernels without IPv6
            sockets = parse_listening_sockets(table.read_text())
            ports.update(port for inode, port in sockets.items() if inode in own)
    return ports
