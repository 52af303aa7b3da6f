"""Joins connections on a Unix socket to a TCP port, byte for byte.

This is how a coordinator reaches a worker that listens only inside its own network namespace:
the socket file sits on the shared filesystem, where file permissions decide who may connect.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

# Measured: default (socat-sized) buffers cost +40-60 ms per 20 MB round; 1 MiB made it 0-20%.
BUFFER_BYTES = 1 << 20
_OWNER_ONLY_UMASK = 0o177  # the socket file is created 0600, with no window in which it is wider


async def serve_unix(path: Path, host: str, port: int) -> asyncio.Server:
    """Listens on the Unix socket `path` (mode 0600) and forwards each connection to host:port."""

    async def forward(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port, limit=BUFFER_BYTES)
        except OSError:  # the worker is gone; the client sees a closed connection and retries
            client_writer.close()
            return
        for writer in (client_writer, upstream_writer):
            _enlarge_buffers(writer.get_extra_info("socket"))
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    previous_umask = os.umask(_OWNER_ONLY_UMASK)
    try:
        return await asyncio.start_unix_server(forward, path, limit=BUFFER_BYTES)
    finally:
        os.umask(previous_umask)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(BUFFER_BYTES):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()  # either side closing ends the whole connection, as gRPC expects


def _enlarge_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
