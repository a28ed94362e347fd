"""A killed run takes its children with it (mvlp_core.reaper), a run that ends normally leaves
nothing to reap, and the next holder of a workdir lock waits for a dead holder's children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import concurrency
from mvlp_core import reaper
from mvlp_core.contract import StageError

ROOT = Path(__file__).resolve().parents[2]
# a "run": leads its group (a new session), starts its reaper, starts a child that would outlive it
RUN = """
import subprocess, sys
from mvlp_core import reaper
assert reaper.reap_children_on_death()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
if sys.stdin.readline().strip() == "exit":
    sys.exit(0)
"""


def start_run() -> tuple[subprocess.Popen, int]:
    run = subprocess.Popen(
        [sys.executable, "-c", RUN],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return run, int(run.stdout.readline())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_killed_run_takes_its_children_with_it() -> None:
    run, child = start_run()
    assert alive(child) and os.getpgid(child) == run.pid
    run.kill()
    run.wait()
    assert wait_until(lambda: not alive(child)), f"child {child} outlived the killed run"
    assert reaper.group_members(run.pid) == []


def test_a_run_that_ends_normally_leaves_its_children_alone() -> None:
    run, child = start_run()
    try:
        run.stdin.write("exit\n")
        run.stdin.flush()
        assert run.wait(timeout=60) == 0
        # the reaper was stood down: its process is gone and the child was not touched
        assert wait_until(lambda: reaper.group_members(run.pid) == [child])
        assert alive(child)
    finally:
        os.kill(child, signal.SIGKILL)


def test_the_next_lock_holder_waits_for_a_dead_holders_children(tmp_path: Path) -> None:
    """The reaper is bypassed here (the group's leader dies and its child lives on): taking the
    lock refuses to write beside the orphan, naming its group and the fix."""
    orphan_group = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)",
        ],
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: len(reaper.group_members(orphan_group.pid)) == 2)
        orphan_group.kill()
        orphan_group.wait()
        record = f"pid {orphan_group.pid} group {orphan_group.pid} on {os.uname().nodename}\n"
        (tmp_path / concurrency.LOCK_FILE).write_text(record)
        with pytest.raises(
            StageError,
            match=rf"still running \(process group {orphan_group.pid}: \[\d+\]\); stop them with `kill -9 -- -{orphan_group.pid}`",
        ):
            concurrency.wait_for_previous_holder(record, tmp_path, timeout=0.2)
    finally:
        for pid in reaper.group_members(orphan_group.pid):
            os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: reaper.group_members(orphan_group.pid) == [])
    concurrency.wait_for_previous_holder(record, tmp_path, timeout=0.2)  # an empty group: no wait


def test_a_run_starts_its_reaper_before_its_prefect_server(tmp_path: Path, monkeypatch) -> None:
    """Processes already in the group when the reaper starts are spared (a `tee` of the output):
    the run's short-lived Prefect server must start after it, or a killed run leaves the server
    behind and its re-run waits for it in vain (`tests/chaos/test_orphans.py` kills a real run)."""
    from flows import cli, prefect_api

    calls: list[str] = []

    class Stop(Exception):
        pass

    def choose_api(*_args, **_kw):
        calls.append("prefect server")
        raise Stop

    monkeypatch.setattr(reaper, "reap_children_on_death", lambda: calls.append("reaper") or True)
    monkeypatch.setattr(prefect_api, "choose_api", choose_api)
    with pytest.raises(Stop):
        cli._execute(Path("demo"), tmp_path, ["dataset.samples=8"], only="ingest")
    assert calls == ["reaper", "prefect server"]
