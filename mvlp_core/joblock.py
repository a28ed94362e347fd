"""One Ray job writes a stage at a time.

A stage's Ray job (`python -m ray_jobs STAGE`) holds `<workdir>/.mvlp-job-<stage>.lock` (`flock`,
which the kernel releases when the job's driver dies) while it runs the stage. A run killed
without the chance to stop its job (SIGKILL, an OOM-killed flow-run pod) leaves that job running
on the cluster, and the workdir lock its run held is gone. The next run's submission of the same
stage, or its running of the stage in its own process, finds the job lock held and stops with the
job's name (`flows.stage_flows`), and a second job that starts anyway (submitted by hand, or while
the first was still pending) stops at this lock before it writes: two jobs never write one stage
folder, nor train one model twice on the GPUs.

The lock sits in the workdir, the shared volume every job and flow-run pod mounts; `flock` holds
across machines on the storage the workdir lock needs too (NFSv4, CephFS, EFS).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mvlp_core.contract import StageError

LOOK_SECONDS = 2.0  # longer than any look of `holder` lasts, NFS round trips included


@dataclass(frozen=True)
class Holder:
    """The job holding a stage: its name (empty for a job started by hand without `--job`), where
    its driver runs and since when (UTC)."""

    job: str
    host: str
    pid: int
    since: str


def lock_path(workdir: str | Path, stage: str) -> Path:
    return Path(workdir) / f".mvlp-job-{stage}.lock"


def _read(fh) -> Holder:
    fh.seek(0)
    try:
        record = json.loads(fh.read())
        return Holder(str(record["job"]), str(record["host"]), int(record["pid"]), str(record["since"]))
    except (ValueError, KeyError, TypeError):  # written by its holder this very moment
        return Holder("", "unknown host", 0, "unknown")


def busy_error(stage: str, workdir: str | Path, holder: Holder) -> StageError:
    job = holder.job or "started by hand"
    stop = (
        f"`ray job stop {holder.job}` (Jobs API) or `kubectl delete rayjob {holder.job}` (KubeRay)"
        if holder.job
        else f"kill {holder.pid} on {holder.host}"
    )
    return StageError(
        f"stage {stage} in {workdir} is being written by another Ray job ({job}; pid {holder.pid} on "
        f"{holder.host} since {holder.since}), most likely one a killed run left running; it goes on "
        f"by itself. Wait for it to end and run again (a stage it completes is not redone), or stop "
        f"it first: {stop}"
    )


@contextmanager
def holding(workdir: str | Path, stage: str, job: str) -> Iterator[None]:
    """Hold `stage`'s job lock as the job named `job` while the block runs; a StageError naming
    the holder when another job holds it."""
    path = lock_path(workdir, stage)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+", encoding="utf-8")
    except OSError as err:
        raise StageError(
            f"stage {stage}: cannot open its job lock {path} ({err}); the workdir must be writable "
            "by the job (the shared volume's permissions)"
        ) from None
    with fh:
        if not _lock(fh):
            raise busy_error(stage, workdir, _read(fh))
        fh.seek(0)
        fh.truncate()
        since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        fh.write(json.dumps({"job": job, "host": socket.gethostname(), "pid": os.getpid(), "since": since}))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock(fh, patience: float = LOOK_SECONDS) -> bool:
    """Take the lock exclusively; False if another job holds it. `holder` takes it shared for a
    moment to look (`mvlp status --watch` every 2 s): that is waited out, a job's hold is not."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def holder(workdir: str | Path, stage: str) -> Holder | None:
    """The job holding `stage`'s lock now, or None when no job does."""
    path = lock_path(workdir, stage)
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fh)
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


def refuse_if_held(workdir: str | Path, stage: str, own: str | None = None) -> None:
    """A StageError naming the job that holds `stage`, unless none does or it is `own` (the job
    a retried submission of this run follows)."""
    held = holder(workdir, stage)
    if held is not None and held.job != own:
        raise busy_error(stage, workdir, held)
