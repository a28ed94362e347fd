"""Which Prefect API a local run reports to (flows/prefect_api.py): a server answering on the UI
port is adopted and exported to the run, anything else on that port is not, and on the ephemeral
server the flows run without heartbeats."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from flows import prefect_api


def serve(body: bytes) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            ok = self.path == "/api/health"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(body if ok else b"")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def healthy() -> Iterator[int]:
    yield from serve(b"true")


@pytest.fixture
def impostor() -> Iterator[int]:
    yield from serve(b"<html>not prefect</html>")


def test_a_running_server_is_adopted_and_exported(healthy: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = f"http://127.0.0.1:{healthy}/api"
    assert prefect_api.choose_api(healthy) == url

    assert os.environ["PREFECT_API_URL"] == url  # Ray workers and stage processes inherit it


def test_an_explicit_api_url_wins(healthy: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://cluster:4200/api")
    assert prefect_api.choose_api(healthy) == "http://cluster:4200/api"


def test_nothing_or_something_else_on_the_port_means_the_ephemeral_server(
    impostor: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert prefect_api.choose_api(impostor) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert prefect_api.choose_api(closed) is None

    assert "PREFECT_API_URL" not in os.environ


def test_heartbeats_off_only_on_the_ephemeral_server() -> None:
    from prefect.settings import get_current_settings

    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    with prefect_api.run_settings(None):
        assert get_current_settings().flows.heartbeat_frequency is None
    with prefect_api.run_settings("http://127.0.0.1:4200/api"):
        assert get_current_settings().flows.heartbeat_frequency == default
