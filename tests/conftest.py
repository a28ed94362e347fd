"""Test-wide settings: a private Prefect home per session, no update checks, no telemetry."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="mvlp-prefect-")
os.environ["PREFECT_HOME"] = _home
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
