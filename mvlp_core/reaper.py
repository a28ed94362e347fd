"""Every process a run starts dies with it.

A run's children (img2dataset's forkserver and workers, Prefect's API server) live in the run's
process group; if the run is killed (`kill -9`, the OOM killer), nothing in it can stop them, and
they go on fetching and writing into a workdir whose lock the kernel has just released. So a run
that holds a workdir leads its own process group and starts a reaper: a small process in a session
of its own that waits for the run's death (a pidfd: woken at once, no polling) and then SIGKILLs
what the group holds (sparing processes that were in it before the reaper started, such as a `tee`
the run's output is piped to). A run that ends normally stands its reaper down first. The next holder of the workdir lock also waits until the previous holder's group is
empty before it writes (`wait_for_group`), so no process writes to a workdir whose lock it does
not hold even if the reaper itself was killed.

Run as `python -m mvlp_core.reaper PID [SPARED...]`: the reaper of run PID (which leads process
group PID), sparing the processes SPARED.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

_started: dict[int, subprocess.Popen] = {}


def _live_processes(field: int, value: int) -> list[int]:
    """Live (not zombie) processes whose /proc stat field `field` (counted after the name: 0 state,
    2 process group, 3 session) is `value`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[field]) == value:
            found.append(int(entry.name))
    return found


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid`."""
    return _live_processes(2, pgid)


def session_members(sid: int) -> list[int]:
    """Live processes of session `sid`."""
    return _live_processes(3, sid)


def lead_own_group() -> bool:
    """Make this process lead a process group of its own where that is safe; True if it leads one.

    A command started by a shell with job control already leads its group. One started by another
    program (a Prefect worker, a test, a script) joins a new group of its own, unless it is in a
    terminal's foreground group, whose Ctrl-C it would no longer receive."""
    pid = os.getpid()
    if os.getpgid(0) == pid:
        return True
    try:
        foreground = os.tcgetpgrp(sys.stdin.fileno()) == os.getpgid(0)
    except (OSError, ValueError):
        foreground = False
    if foreground:
        return False
    os.setpgid(0, 0)
    return True


def reap_children_on_death() -> bool:
    """Lead a process group and start its reaper (once per process); False where this process
    cannot lead one, so its children are not reaped (the next lock holder still waits for them)."""
    pid = os.getpid()
    if pid in _started:
        return True
    if sys.platform != "linux" or not lead_own_group():
        return False
    spare = [str(p) for p in group_members(pid) if p != pid]  # in the group before the run's children
    reaper = subprocess.Popen(
        [sys.executable, "-m", "mvlp_core.reaper", str(pid), *spare],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outside the group it kills, and alive after the run dies
        close_fds=True,
    )
    _started[pid] = reaper
    atexit.register(reaper.terminate)  # a normal end: nothing to reap
    return True


def wait_for_group(pgid: int, timeout: float) -> list[int]:
    """Wait until process group `pgid` has no member left whose leader is gone (the orphans of a
    dead lock holder); returns the ones still alive at the timeout. A group whose leader is alive
    is not waited for: a reused process id names someone else's group."""
    deadline = time.monotonic() + timeout
    while True:
        if Path(f"/proc/{pgid}").exists():
            return []
        alive = group_members(pgid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _wait_for_death(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # a kernel without pidfds: poll
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    pid, spare = int(argv[0]), {int(p) for p in argv[1:]}
    _wait_for_death(pid)
    for _ in range(3):  # a child killed while forking may leave one more
        for member in set(group_members(pid)) - spare:
            try:
                os.kill(member, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
