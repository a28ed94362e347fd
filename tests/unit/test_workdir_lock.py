"""The workdir lock: a second writer stops with an error naming the holder; a killed holder
releases it at once (so a killed run resumes without waiting for a lease)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.concurrency import workdir_lock
from mvlp_core.contract import StageError

ROOT = Path(__file__).resolve().parents[2]
HOLDER = (
    "import sys; from flows.concurrency import workdir_lock\n"
    "with workdir_lock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.read()\n"
)


def test_second_writer_is_refused_and_a_killed_holder_releases(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StageError, match=rf"being written by another run \(pid {proc.pid} group - on "):
            with workdir_lock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()
    with workdir_lock(tmp_path):  # free again the moment the holder died
        assert (tmp_path / ".mvlp.lock").read_text().startswith("pid ")


def test_lock_is_released_on_exit(tmp_path: Path) -> None:
    with workdir_lock(tmp_path):
        pass
    with workdir_lock(tmp_path):
        pass
