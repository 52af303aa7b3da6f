"""One worker as a container's main process (`fedrun worker`), on a fixed port.

The binary is not exec'd: as pid 1 of a container it would ignore SIGTERM (it sets no handler;
measured), so Kubernetes would wait out the grace period and SIGKILL it. This process stays its
parent, passes SIGTERM and SIGINT on, and exits with the worker's status.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import subprocess

from cluster.errors import WorkerStartError
from cluster.local.binary import find_worker_binary
from cluster.local.options import LocalWorkerOptions, process_options
from cluster.local.spawner import Spawner
from cluster.settings import WorkerSettings

_LOG = logging.getLogger(__name__)


def serve_worker(port: int, settings: WorkerSettings) -> int:
    """Runs worker_binary on `port`, with the settings' flags and threads, until it exits;
    returns its exit status (128+N if signalled)."""
    try:
        options = process_options(settings, log_dir=None, isolation="none")
    except ValueError as error:
        raise WorkerStartError(str(error)) from None
    return run_foreground_worker(port, options)


def run_foreground_worker(port: int, options: LocalWorkerOptions) -> int:
    """Runs worker_binary on `port` until it exits; returns its exit status (128+N if signalled)."""
    if not 1 <= port <= 65535:  # the binary itself silently wraps out-of-range ports
        raise WorkerStartError(f"port must be between 1 and 65535; got {port}")
    _check_port_free(port)
    command = options.worker_command(find_worker_binary(options.binary), port)
    _LOG.warning(
        "TFF executor service on port %d of every interface, without authentication: anyone who "
        "reaches it can run TensorFlow graphs as this user; let only the coordinator connect "
        "(NetworkPolicy, firewall)",
        port,
    )
    spawner = Spawner()  # the worker dies with this process, even if it is SIGKILLed
    try:
        try:
            worker = spawner.popen(command, stdin=subprocess.DEVNULL, env=options.worker_environment())
        except OSError as error:
            raise WorkerStartError(f"could not run worker binary {command[0]}: {error}") from error
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda received, frame: worker.send_signal(received))
        code = worker.wait()
    finally:
        spawner.close()
    return 128 - code if code < 0 else code


def _check_port_free(port: int) -> None:
    """The binary silently shares a port another process holds (SO_REUSEPORT): a second worker
    on a taken port would split the coordinator's calls between them. Bind it first, without
    SO_REUSEPORT; SO_REUSEADDR lets connections of a worker that just stopped (TIME_WAIT) pass,
    as a restart at the same address must, while a listener still makes the bind fail."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((address, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise WorkerStartError(
                    f"port {port} is already in use (another worker, or something else, listens there): "
                    f"stop it or choose another --port"
                ) from None
            if error.errno != errno.EAFNOSUPPORT:  # no IPv6 here: IPv4 decides
                raise
