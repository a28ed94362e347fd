"""Which Prefect API a local run reports to (flows/prefect_api.py): a server answering on the UI
port is adopted and exported to the run, anything else on that port is not, on the ephemeral
server the flows run without heartbeats, and on any other a flow's end does not wait for them."""

from __future__ import annotations

import http.server
import inspect
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import prefect_api
from mvlp_core.contract import StageError


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


def test_a_running_server_is_adopted_and_exported(
    healthy: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = f"http://127.0.0.1:{healthy}/api"
    api = prefect_api.choose_api(healthy, tmp_path / "run.log")
    assert (api.url, api.short_lived, api.server) == (url, False, None)

    assert os.environ["PREFECT_API_URL"] == url  # Ray workers and stage processes inherit it


def test_an_explicit_api_url_wins(healthy: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://cluster:4200/api")
    api = prefect_api.choose_api(healthy, tmp_path / "run.log")
    assert (api.url, api.short_lived) == ("http://cluster:4200/api", False)


def test_nothing_or_something_else_on_the_port_in_a_process_with_prefect_leaves_it_to_prefect(
    impostor: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import prefect  # noqa: F401 - imported: its settings are read, Prefect starts its own server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert prefect_api.choose_api(impostor, tmp_path / "run.log") == prefect_api.Api(None, short_lived=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert prefect_api.choose_api(closed, tmp_path / "run.log").url is None
    assert "PREFECT_API_URL" not in os.environ


def test_a_short_lived_server_answers_and_stops(tmp_path: Path) -> None:
    """The server a run starts before importing Prefect: the real Prefect API under uvicorn,
    healthy within the wait, stopped (not left running) after."""
    server = prefect_api.ShortLivedServer(tmp_path / "run.log")
    try:
        server.wait(180)
        assert prefect_api.running_server(server.port) == server.url
    finally:
        server.stop()
    assert server.process.poll() is not None and prefect_api.running_server(server.port) is None


def test_a_server_that_exits_is_a_clear_error(tmp_path: Path) -> None:
    server = prefect_api.ShortLivedServer(tmp_path / "run.log")
    server.process.kill()
    server.process.wait()
    with pytest.raises(StageError, match="exited with code .* its output is in .*run.log"):
        server.wait(30)


def test_heartbeats_off_only_on_a_short_lived_server() -> None:
    from prefect.settings import get_current_settings

    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    with prefect_api.run_settings(prefect_api.Api(None, short_lived=True)):
        assert get_current_settings().flows.heartbeat_frequency is None
    with prefect_api.run_settings(prefect_api.Api("http://127.0.0.1:4200/api", short_lived=False)):
        assert get_current_settings().flows.heartbeat_frequency == default


class _Engine:
    """What `_send_heartbeats` reads of a flow run engine: a run that is not final, heartbeats on."""

    heartbeat_seconds = 30
    flow_run = None
    logger = logging.getLogger("test-heartbeats")

    def __init__(self) -> None:
        self.emitted = threading.Event()

    def _build_heartbeat_event_template(self) -> tuple[None, None]:
        return None, None

    def _emit_flow_run_heartbeat(self, resource: None, related: None) -> None:
        self.emitted.set()


def _heartbeat_joins(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Runs a sync flow's heartbeat context as Prefect's sync engine enters it (no arguments but
    the engine) and records which threads were joined."""
    from prefect import flow_engine

    joined: list[threading.Thread] = []
    join = threading.Thread.join

    def recording(self: threading.Thread, timeout: float | None = None) -> None:
        joined.append(self)
        join(self, timeout)

    monkeypatch.setattr(threading.Thread, "join", recording)
    engine = _Engine()
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine):
        started = [t for t in threading.enumerate() if t not in before]
        assert engine.emitted.wait(30), "the heartbeat thread emits at once"
    monkeypatch.setattr(threading.Thread, "join", join)
    assert len(started) == 1, "one heartbeat thread per flow run"
    started[0].join()  # it stops on its own at its next one-second step
    return [t for t in joined if t is started[0]]


def test_a_long_lived_server_does_not_wait_for_heartbeat_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's sync flow engine waits up to a second for its heartbeat thread at every flow's
    end; inside a run reporting to a long-lived server it leaves the thread to stop by itself, and
    the patch is undone after the run."""
    from prefect import flow_engine

    assert "join_on_exit" in inspect.signature(flow_engine._send_heartbeats).parameters
    joined = _heartbeat_joins(monkeypatch)
    assert joined, "Prefect's own behaviour: the sync engine joins its heartbeat thread"
    original = flow_engine._send_heartbeats
    with prefect_api.run_settings(prefect_api.Api("http://127.0.0.1:4200/api", short_lived=False)):
        assert _heartbeat_joins(monkeypatch) == []
    assert flow_engine._send_heartbeats is original
