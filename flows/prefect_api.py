"""Which Prefect API a local `mvlp run` reports to, chosen so that a small run does not pay for
what it does not use.

- A server already answering on this machine's `mvlp ui` port (PREFECT_API_URL unset) is adopted:
  the run shows in the UI the user has open, and no ephemeral server has to start (about 10 s of
  a 2-core machine: the server's imports, then polling until it answers).
- On the ephemeral server (nothing else running) flow-run heartbeats are off: they exist to let a
  server tell a crashed run from a slow one, and the ephemeral server stops with the run. Each flow
  otherwise waits up to a second on exit for its heartbeat thread, one flow per stage.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Iterator

HEALTH_TIMEOUT_S = 0.5


def running_server(port: int) -> str | None:
    """The API URL of a Prefect server answering its health check on 127.0.0.1:`port`, else None."""
    url = f"http://127.0.0.1:{port}/api"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=HEALTH_TIMEOUT_S) as response:
            healthy = response.status == 200 and response.read().strip() == b"true"
    except (OSError, ValueError):
        return None
    return url if healthy else None


def choose_api(port: int) -> str | None:
    """PREFECT_API_URL when set; else a running server on `port`, exported for this run (and the
    processes it starts); else None: the run starts Prefect's ephemeral server."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    found = running_server(port)
    if found is not None:
        os.environ["PREFECT_API_URL"] = found
    return found


@contextlib.contextmanager
def run_settings(api: str | None) -> Iterator[None]:
    """Prefect settings for this run's flows: heartbeats off on the ephemeral server (api None)."""
    if api is not None:
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
