"""Small synthesised data files (the real formats) and a local HTTP server for the data tests."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.data import synth

TRAIN, TEST = 60, 20


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, Path]:
    """One synthesised standard file per format, in one directory: name -> path."""
    out = tmp_path_factory.mktemp("standard")
    return {name: write(out, train=TRAIN, test=TEST, seed=1)
            for name, write in synth.WRITERS.items()}


@pytest.fixture(scope="session")
def sizes() -> tuple[int, int]:
    """(train, test): how many images each of ``files`` holds."""
    return TRAIN, TEST


@pytest.fixture
def no_data_dir(monkeypatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    """serve(directory) -> the http://127.0.0.1:PORT base URL of a server for that directory."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
