"""The port check of `fedrun worker`, on real sockets on loopback (no worker started)."""

import socket

import pytest

from cluster.errors import WorkerStartError
from cluster.local.foreground import _check_port_free


def _port_in_time_wait() -> int:
    """A port whose listener is gone but whose server side closed a connection first, as a
    stopped worker leaves it: the kernel keeps that socket in TIME_WAIT for a minute. The
    listener sets SO_REUSEADDR, as gRPC's servers do."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server closes first: its end goes to TIME_WAIT
        client.close()
    return port


def test_a_port_a_stopped_worker_just_left_is_free():
    _check_port_free(_port_in_time_wait())


def test_a_port_with_a_listener_is_taken():
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        with pytest.raises(WorkerStartError, match="already in use"):
            _check_port_free(listener.getsockname()[1])
