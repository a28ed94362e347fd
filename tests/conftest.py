"""Test-wide settings: a private Prefect home per session, no update checks, no telemetry."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="mvlp-prefect-")
os.environ["PREFECT_HOME"] = _home
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
# Prefect's ephemeral server (what `mvlp run` starts in the e2e tests) must come up on a loaded
# 2-core machine; its default start-up limit is tuned for idle laptops.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
