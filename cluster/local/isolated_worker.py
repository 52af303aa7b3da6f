"""Inside a worker's private namespaces: starts worker_binary and forwards a Unix socket to it.

Usage: python -m cluster.local.isolated_worker SOCKET_PATH WORKER_COMMAND...

LocalProcessBackend runs this under `unshare` (cluster.local.netns) as pid 1 of a new pid namespace:
when it ends, for whatever reason, the kernel kills the worker too. The socket file appears only
once the worker listens, so its existence is the readiness signal; the exit status is the worker's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from cluster.local.forwarder import serve_unix
from cluster.local.netns import bring_loopback_up
from cluster.local.ports import parse_listening_sockets

_POLL_INTERVAL_S = 0.02
_LOOPBACK = "127.0.0.1"  # the worker binds [::] dual-stack: IPv4 loopback reaches it
_CANNOT_EXECUTE = 126  # the shell's exit status for a command that cannot run
_TABLES = (Path("/proc/self/net/tcp6"), Path("/proc/self/net/tcp"))


def main(argv: list[str]) -> int:
    # As pid 1 this process ignores signals it has no handler for, SIGTERM included.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if len(argv) < 2:
        _say("usage: python -m cluster.local.isolated_worker SOCKET_PATH WORKER_COMMAND...")
        return 2
    socket_path, *worker_command = argv
    bring_loopback_up()
    return asyncio.run(_serve(Path(socket_path), worker_command))


async def _serve(socket_path: Path, worker_command: list[str]) -> int:
    try:
        worker = await asyncio.create_subprocess_exec(*worker_command)  # output goes to our log
    except OSError as error:
        _say(f"could not run worker binary {worker_command[0]}: {error}")
        return _CANNOT_EXECUTE
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _pass_on, worker, signum)
    port = await _listening_port(worker)
    if port is not None:
        server = await serve_unix(socket_path, _LOOPBACK, port)
        _say(f"forwarding unix:{socket_path} -> {_LOOPBACK}:{port}")
        async with server:
            await worker.wait()
    code = await worker.wait()
    _say(f"worker exited with {'signal ' + str(-code) if code < 0 else 'exit code ' + str(code)}")
    return 128 - code if code < 0 else code


async def _listening_port(worker: asyncio.subprocess.Process) -> int | None:
    """The worker's port; None if it exits first. The namespace is private: any listener is its."""
    while worker.returncode is None:
        ports = {
            port
            for table in _TABLES
            if table.exists()
            for port in parse_listening_sockets(table.read_text()).values()
        }
        if len(ports) > 1:
            _say(f"the worker listens on several ports {sorted(ports)}; is it TFF's worker_binary?")
            _pass_on(worker, signal.SIGKILL)
        elif ports:
            return ports.pop()
        await asyncio.sleep(_POLL_INTERVAL_S)
    return None


def _pass_on(worker: asyncio.subprocess.Process, signum: int) -> None:
    # Not worker.send_signal or kill: they poll, and may reap the worker behind the child
    # watcher's back (which then reports exit code 255).
    # No other process in this pid namespace can have taken the pid meanwhile.
    if worker.returncode is None:
        try:
            os.kill(worker.pid, signum)
        except ProcessLookupError:
            pass


def _say(message: str) -> None:
    print(f"fedrun isolated_worker: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
