"""One Ray job writes a stage at a time (mvlp_core.joblock): a job's driver holds the stage's lock
while it runs, another job's driver for the same stage stops before it writes, naming the holder,
and the lock frees the moment the holding driver is killed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mvlp_core import joblock
from mvlp_core.contract import StageError

HOLD = """
import sys
from mvlp_core import joblock
with joblock.holding(sys.argv[1], "pretrain", sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


def _holding_driver(workdir: Path, job: str) -> subprocess.Popen:
    """A process holding `pretrain`'s job lock as `job` until it is killed or its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(workdir), job],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_stage_names_its_job_and_frees_when_the_driver_is_killed(tmp_path: Path) -> None:
    assert joblock.holder(tmp_path, "pretrain") is None  # no job ever ran here
    driver = _holding_driver(tmp_path, "mvlp-pretrain-demo-1a2b3c4d")
    try:
        held = joblock.holder(tmp_path, "pretrain")
        assert held is not None and (held.job, held.pid) == ("mvlp-pretrain-demo-1a2b3c4d", driver.pid)
        assert joblock.holder(tmp_path, "translate") is None  # one lock per stage
        with pytest.raises(StageError) as err, joblock.holding(tmp_path, "pretrain", "mvlp-pretrain-demo-99"):
            pytest.fail("a second job entered a held stage")
        message = str(err.value)
        assert "mvlp-pretrain-demo-1a2b3c4d" in message and f"pid {driver.pid}" in message
        assert "ray job stop mvlp-pretrain-demo-1a2b3c4d" in message
        assert "kubectl delete rayjob mvlp-pretrain-demo-1a2b3c4d" in message
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert joblock.holder(tmp_path, "pretrain") is None  # the kernel released the dead driver's lock
    with joblock.holding(tmp_path, "pretrain", "mvlp-pretrain-demo-99"):
        assert joblock.holder(tmp_path, "pretrain").job == "mvlp-pretrain-demo-99"
    assert joblock.holder(tmp_path, "pretrain") is None


def test_a_job_started_by_hand_is_named_by_its_process(tmp_path: Path) -> None:
    with joblock.holding(tmp_path, "qa", ""):
        held = joblock.holder(tmp_path, "qa")
        message = str(joblock.busy_error("qa", tmp_path, held))
    assert "started by hand" in message and "kill " in message and "ray job stop" not in message


def test_the_entrypoint_stops_before_writing_a_stage_another_job_holds(tmp_path: Path, capsys) -> None:
    """`python -m ray_jobs pretrain` while an earlier run's job still holds the stage: exit 2 with
    the holder's name, and nothing written into the stage's folder."""
    from ray_jobs import entrypoint

    driver = _holding_driver(tmp_path, "mvlp-pretrain-demo-1a2b3c4d")
    try:
        code = entrypoint.main(["pretrain", "--spec", "demo", "--workdir", str(tmp_path), "--job", "mvlp-2"])
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert code == 2
    assert "being written by another Ray job (mvlp-pretrain-demo-1a2b3c4d" in capsys.readouterr().err
    assert not (tmp_path / "pretrain").exists()


def test_the_entrypoint_holds_the_stage_while_it_runs(tmp_path: Path, monkeypatch) -> None:
    from ray_jobs import engines, entrypoint

    seen = []

    def run_stage(spec, stage, **_):
        seen.append(joblock.holder(spec.workdir, stage))
        raise StageError("stopped here: the lock is what this test looks at")

    monkeypatch.setattr(engines, "run_stage", run_stage)
    args = ["iglue-eval", "--spec", "demo", "--workdir", str(tmp_path), "--job", "mvlp-iglue-eval-demo-5"]
    assert entrypoint.main(args) == 2
    assert [h.job for h in seen] == ["mvlp-iglue-eval-demo-5"]
    assert joblock.holder(tmp_path, "iglue-eval") is None  # released with the job's end


def test_a_run_does_not_run_a_stage_in_its_own_process_while_a_job_writes_it(tmp_path: Path) -> None:
    """A local run on the workdir of a killed remote run, whose job still writes `ingest`: the stage
    fails naming the job instead of writing beside it."""
    from flows.stage_flows import run_stage_task
    from mvlp_core.spec import load_spec

    spec = load_spec("demo", [], tmp_path)
    with joblock.holding(tmp_path, "ingest", "mvlp-ingest-demo-0ld0rph4"):
        with pytest.raises(StageError, match="another Ray job \\(mvlp-ingest-demo-0ld0rph4"):
            run_stage_task.fn(spec, "ingest")
    assert not (tmp_path / "ingest").exists()


def test_a_look_at_the_lock_does_not_fail_a_starting_job(tmp_path: Path, monkeypatch) -> None:
    """`holder` takes the lock shared for a moment (`mvlp status --watch` every 2 s): a job starting
    in that moment waits it out instead of failing on a lock no job holds."""
    import fcntl

    real, refusals = fcntl.flock, []

    def flock(fh, op):
        if op & fcntl.LOCK_EX and len(refusals) < 3:  # a look in progress, three tries long
            refusals.append(op)
            raise BlockingIOError
        return real(fh, op)

    monkeypatch.setattr(joblock.fcntl, "flock", flock)
    with joblock.holding(tmp_path, "pretrain", "mvlp-pretrain-demo-1"):
        pass
    assert len(refusals) == 3


def test_a_workdir_the_job_cannot_write_is_one_line(tmp_path: Path) -> None:
    workdir = tmp_path / "not-a-folder"
    workdir.write_text("")
    with pytest.raises(StageError, match="cannot open its job lock .*not-a-folder/.mvlp-job-qa.lock"):
        with joblock.holding(workdir, "qa", "mvlp-qa-demo-1"):
            pytest.fail("held a lock it could not open")
