"""Test-wide settings: a private Prefect home per session, no update checks, no telemetry, and
Ray's authentication token made once, before `make test`'s two processes start Ray clusters."""

import os
import tempfile
from pathlib import Path


def _ray_token_once() -> None:
    """A first `ray.init()` writes ~/.ray/auth_token when there is none; two test processes doing
    it at once on a fresh machine would each write one, and a cluster would hold the other's."""
    if (Path.home() / ".ray" / "auth_token").exists():
        return
    try:
        from ray._private.authentication.authentication_token_setup import generate_and_save_token
    except ImportError:  # a Ray without token authentication writes none
        return
    generate_and_save_token()


_ray_token_once()

_home = tempfile.mkdtemp(prefix="mvlp-prefect-")
os.environ["PREFECT_HOME"] = _home
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
# Prefect's ephemeral server (what `mvlp run` starts in the e2e tests) must come up on a loaded
# 2-core machine; its default start-up limit is tuned for idle laptops.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
