"""Two guarantees: one run writes a workdir at a time (a lock file the OS releases when the
holder dies, so a killed run can be resumed at once), and at most `execution.gpu_slots` submitted Ray
(GPU) stages run at once across all runs on the same Prefect API (a global concurrency limit).

The workdir lock is `flock` on `<workdir>/.mvlp.lock`: local disks and shared POSIX storage
(NFSv4, CephFS, EFS) honour it; a Prefect limit would instead hold a killed run's slot until its
lease expires. The lock file names its holder's process group; a new holder waits until the
previous holder's group is empty (mvlp_core.reaper), so a killed run's children never write
beside it."""

from __future__ import annotations

import fcntl
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from mvlp_core import reaper
from mvlp_core.contract import StageError

GPU_LIMIT = "mvlp-gpu-stages"
LOCK_FILE = ".mvlp.lock"


def wait_for_previous_holder(record: str, workdir: str | Path, timeout: float = 60) -> None:
    """The kernel releases the lock when its holder dies, but not the holder's children: wait until
    the previous holder's process group is empty (its reaper kills it), so that nothing it started
    writes here while this holder does."""
    found = re.search(r"group (\d+) on (\S+)", record)
    if not found or found[2] != socket.gethostname():
        return
    alive = reaper.wait_for_group(int(found[1]), timeout)
    if alive:
        raise StageError(
            f"processes of the run that held {workdir} before it died are still running (process "
            f"group {found[1]}: {alive[:5]}); stop them with `kill -9 -- -{found[1]}` and run again"
        )


@contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[None]:
    path = Path(workdir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise StageError(
                f"{workdir} is being written by another run ({holder}); wait for it to finish, or "
                "give this run another --workdir"
            ) from None
        fh.seek(0)
        wait_for_previous_holder(fh.read(), workdir)
        fh.seek(0)
        fh.truncate()
        pid = os.getpid()
        group = pid if os.getpgid(0) == pid else "-"  # recorded only when this process leads it
        fh.write(f"pid {pid} group {group} on {socket.gethostname()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def hold(name: str, limit: int, timeout_seconds: float | None = None) -> Iterator[None]:
    """Take one slot of the global limit `name` (created, or resized, to `limit` first). A lease
    that cannot be renewed (the Prefect server restarting) is logged, not fatal: Prefect's strict
    mode would otherwise cancel the stage a few seconds into the outage, days into a training run
    whose job goes on without it."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit)
    with concurrency(
        name, occupy=1, timeout_seconds=timeout_seconds, strict=True, raise_on_lease_renewal_failure=False
    ):
        yield
