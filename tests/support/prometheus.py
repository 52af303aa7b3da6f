"""Prometheus test helpers: free ports, scraping and parsing, and a stand-in Pushgateway."""

import contextlib
import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


Samples = dict[tuple[str, tuple], float]  # (name, sorted labels) -> value


def samples(text: str) -> Samples:
    """A /metrics page or pushed body, parsed."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@contextlib.contextmanager
def stand_in_pushgateway() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """A real HTTP server that records (method, path, body) of every push; yields its URL and the list."""
    received: list[tuple[str, str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append(("PUT", self.path, self.rfile.read(int(self.headers["Content-Length"])).decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
