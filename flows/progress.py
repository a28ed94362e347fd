"""Progress shown twice: a Prefect progress artifact per stage (the dashboard) and a rich bar in
the terminal when the CLI has installed one."""

from __future__ import annotations

from collections.abc import Callable

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from mvlp_core.contract import ProgressFn

TerminalFn = Callable[[str, int, int], None]
_terminal: list[TerminalFn] = []


def set_terminal(fn: TerminalFn | None) -> None:
    _terminal.clear()
    if fn:
        _terminal.append(fn)


def stage_progress(stage: str) -> ProgressFn:
    artifact_id = create_progress_artifact(
        progress=0.0, key=f"{stage}-progress", description=f"{stage}: share of units done"
    )
    last = {"pct": -1.0}

    def report(done: int, total: int, unit: str) -> None:
        pct = round(100.0 * done / total, 1) if total else 100.0
        if pct != last["pct"]:
            update_progress_artifact(artifact_id, progress=pct)
            last["pct"] = pct
        for fn in _terminal:
            fn(stage, done, total)

    return report
