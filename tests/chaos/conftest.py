"""Session fixtures of the chaos suite: one Prefect API server for every run (an ephemeral server
per CLI run would cost more than the runs), and the uninterrupted reference run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from chaos_harness import finish, start_demo


@pytest.fixture(scope="session")
def prefect_api() -> str:
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=300)
    os.environ["PREFECT_API_URL"] = server.api_url
    yield server.api_url
    os.environ.pop("PREFECT_API_URL", None)
    server.stop()


@pytest.fixture(scope="session")
def chaos_base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chaos")


@pytest.fixture(scope="session")
def live(chaos_base: Path) -> Path:
    """The one absolute workdir every chaos run uses: fingerprints include `{workdir}`-expanded
    paths, so stages copied from the reference are complete only at the path they were made at."""
    return chaos_base / "live"


@pytest.fixture(scope="session")
def reference(prefect_api: str, chaos_base: Path, live: Path) -> Path:
    """An uninterrupted run, copied aside; `live` is reused by every test after it."""
    log = chaos_base / "reference.log"
    finish(start_demo(live, log), log)
    ref = chaos_base / "reference"
    shutil.copytree(live, ref)
    return ref
