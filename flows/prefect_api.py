"""Which Prefect API a local `mvlp run` reports to, chosen so that a small run does not pay for
what it does not use.

- PREFECT_API_URL set: that server.
- Else a server already answering on this machine's `mvlp ui` port is adopted: the run shows in the
  UI the user has open, and no server has to start (about 10 s of a 2-core machine).
- Else a short-lived server, as Prefect's ephemeral one (same command, same database), but started
  as the command starts, before Prefect and the stage code are imported, so that its start-up
  overlaps theirs; Prefect's own would start only when the first flow asks for it, after them,
  and import the server's modules in this process too. It stops with the run.

On a short-lived server flow-run heartbeats are off: they let a server tell a crashed run from a
slow one, and this server stops with the run. On any other server a flow stops its heartbeat
thread without waiting for it, as Prefect's async flows do: the thread sleeps in one-second steps,
so waiting cost up to a second at the end of every flow, one flow per stage.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvlp_core.contract import StageError

HEALTH_TIMEOUT_S = 0.5
PORT_IN_USE = 3  # uvicorn's exit code when the port was taken between choosing and binding it


def running_server(port: int) -> str | None:
    """The API URL of a Prefect server answering its health check on 127.0.0.1:`port`, else None."""
    url = f"http://127.0.0.1:{port}/api"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=HEALTH_TIMEOUT_S) as response:
            healthy = response.status == 200 and response.read().strip() == b"true"
    except (OSError, ValueError):
        return None
    return url if healthy else None


def wait_for_server(port: int, timeout_s: float) -> None:
    """Until a server answers on `port` (one `mvlp ui --background` started); a clear error if
    none does within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while running_server(port) is None:
        if time.monotonic() > deadline:
            raise StageError(
                f"no Prefect server answered on port {port} within {timeout_s:.0f} s; `prefect server"
                " stop` clears a background server that failed, then `mvlp ui` shows why in the foreground"
            )
        time.sleep(0.1)


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShortLivedServer:
    """Prefect's API server in a subprocess for this run (`prefect.server.api.server:create_app`
    under uvicorn, as Prefect starts its ephemeral one), its output appended to `log`."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._start()
        atexit.register(self.stop)

    def _start(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait(self, timeout_s: float) -> None:
        """Until the server answers; a clear error when it exits or does not answer in time."""
        deadline = time.monotonic() + timeout_s
        while running_server(self.port) is None:
            code = self.process.poll()
            if code == PORT_IN_USE:
                self._start()
                os.environ["PREFECT_API_URL"] = self.url
                continue
            if code is not None:
                raise StageError(
                    f"the run's Prefect API server exited with code {code} before answering; its output"
                    f" is in {self.log}. Start one with `mvlp ui` (the run then reports to it)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise StageError(
                    f"the run's Prefect API server did not answer within {timeout_s:.0f} s (output in"
                    f" {self.log}); on a busy machine raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
                    " or start one with `mvlp ui`"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Api:
    """The API this run reports to; `server` is set when the run started it."""

    url: str | None
    short_lived: bool
    server: ShortLivedServer | None = None


_started: ShortLivedServer | None = None


def choose_api(port: int, log: Path) -> Api:
    """PREFECT_API_URL; else a server running on `port`; else a short-lived server started now
    (once per process). Its URL is exported for this run and the processes it starts. Where
    Prefect is already imported (its settings read), Prefect's own ephemeral server is left to it."""
    global _started
    if os.environ.get("PREFECT_API_URL"):
        url = os.environ["PREFECT_API_URL"]
        return Api(url, short_lived=_started is not None and url == _started.url, server=_started)
    found = running_server(port)
    if found is not None:
        os.environ["PREFECT_API_URL"] = found
        return Api(found, short_lived=False)
    if "prefect" in sys.modules:
        return Api(None, short_lived=True)
    _started = ShortLivedServer(log)
    os.environ["PREFECT_API_URL"] = _started.url
    return Api(_started.url, short_lived=True, server=_started)


@contextlib.contextmanager
def heartbeats_not_awaited() -> Iterator[None]:
    """Sync flows leave their heartbeat thread to stop on its own (`join_on_exit=False`, what
    Prefect's async flow engine passes). The thread checks its stop flag between one-second sleeps
    and emits nothing for a run in a final state, so not waiting for it changes no event, only
    the flow's end. Prefect is pinned (pyproject.toml); a test checks the function still takes
    the argument."""
    from prefect import flow_engine

    send = flow_engine._send_heartbeats

    def without_wait(engine: Any, join_on_exit: bool = True) -> Any:
        return send(engine, join_on_exit=False)

    flow_engine._send_heartbeats = without_wait
    try:
        yield
    finally:
        flow_engine._send_heartbeats = send


@contextlib.contextmanager
def run_settings(api: Api) -> Iterator[None]:
    """Prefect settings for this run's flows, once its server answers: its URL where the run
    started it, heartbeats off on a short-lived server and not awaited on any other."""
    if api.server is not None:
        api.server.wait(float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")))
    if not api.short_lived:
        with heartbeats_not_awaited():
            yield
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    updates: dict = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if api.server is not None:  # the URL it answers on (a retry after a port clash moves it)
        updates[PREFECT_API_URL] = api.server.url
    with temporary_settings(updates=updates):
        yield
