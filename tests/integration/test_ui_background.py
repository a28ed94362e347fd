"""`mvlp ui --background` / `--stop`: Prefect's own server started detached (its UI included),
the command returning once the API answers, a second call adopting it, `--stop` ending it, and a
port held by something else failing in one line."""

from __future__ import annotations

import http.server
import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path

from flows import prefect_api

ROOT = Path(__file__).resolve().parents[2]


def mvlp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=ROOT, capture_output=True, text=True
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_background_server_answers_is_adopted_and_stops() -> None:
    port = _free_port()
    pid_file = Path(os.environ["PREFECT_HOME"]) / "server.pid"
    started = mvlp("ui", "--background", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        assert prefect_api.running_server(port) == f"http://127.0.0.1:{port}/api"  # answering on return
        assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api" in started.stdout  # not the UI port
        pid = int(pid_file.read_text())
        again = mvlp("ui", "--background", "--port", str(port))
        assert again.returncode == 0 and int(pid_file.read_text()) == pid  # the same server
        assert "already answers" in again.stdout
        exited = os.pidfd_open(pid)
    finally:
        stopped = mvlp("ui", "--stop")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert select.select([exited], [], [], 60)[0], "the server exits on --stop"
    os.close(exited)
    assert prefect_api.running_server(port) is None and not pid_file.exists()


def test_a_port_held_by_something_else_is_one_line() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        res = mvlp("ui", "--background", "--port", str(server.server_address[1]))
    finally:
        server.shutdown()
        thread.join()
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "did not start on port" in lines[0] and "already in use" in lines[0]
