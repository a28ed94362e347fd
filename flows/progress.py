"""Progress shown twice: a Prefect progress artifact per stage (the dashboard) and a rich bar in
the terminal when the CLI has installed one.

The artifact is an API call per update, so it moves at most once every `ARTIFACT_INTERVAL_S`
and always at 100%, as tqdm's `mininterval` does for a terminal; the bar follows every unit."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from mvlp_core.contract import ProgressFn

TerminalFn = Callable[[str, int, int], None]
_terminal: list[TerminalFn] = []
ARTIFACT_INTERVAL_S = 1.0
_clock: Callable[[], float] = time.monotonic


def set_terminal(fn: TerminalFn | None) -> None:
    _terminal.clear()
    if fn:
        _terminal.append(fn)


def stage_progress(stage: str) -> ProgressFn:
    artifact_id = create_progress_artifact(
        progress=0.0, key=f"{stage}-progress", description=f"{stage}: share of units done"
    )
    last = {"pct": 0.0, "at": _clock()}

    def report(done: int, total: int, unit: str) -> None:
        pct = round(100.0 * done / total, 1) if total else 100.0
        now = _clock()
        if pct != last["pct"] and (pct >= 100.0 or now - last["at"] >= ARTIFACT_INTERVAL_S):
            update_progress_artifact(artifact_id, progress=pct)
            last.update(pct=pct, at=now)
        for fn in _terminal:
            fn(stage, done, total)

    return report
