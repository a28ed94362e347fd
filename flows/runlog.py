"""A run's terminal shows mvlp's own progress and summary; everything else goes to a log file.

Prefect's server, Ray, img2dataset and the libraries under them print warnings, banners and
per-shard chatter that a newcomer reads as failures. The CLI points this
process's stdout and stderr (`mvlp_core.redirect.output_to`: file descriptors 1 and 2, so child
processes follow) at `log_path(workdir)` while a run lasts; the CLI writes through a duplicate of
the terminal made before (`flows.cli.console`).
`QUIET_ENV` turns off what would reach out to the internet unasked: Prefect's telemetry, Ray's
usage statistics, Albumentations' update check, the Hugging Face hub's telemetry.
"""

from __future__ import annotations

import os
from pathlib import Path

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
LOG_DIR = "logs"


def quiet_environment() -> None:
    """Set QUIET_ENV where the user has not chosen otherwise (before Prefect or Ray import)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def log_path(workdir: str | Path) -> Path:
    return Path(workdir) / LOG_DIR / "run.log"
