"""The stage progress reporter (flows/progress.py): the terminal bar follows every unit, the
Prefect progress artifact (one API call per update) moves at most once a second and always
reaches 100%."""

from __future__ import annotations

import pytest

from flows import progress


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict:
    calls: dict = {"updates": [], "bar": [], "now": 0.0}
    monkeypatch.setattr(progress, "create_progress_artifact", lambda **kw: "artifact-id")
    monkeypatch.setattr(
        progress, "update_progress_artifact", lambda aid, progress: calls["updates"].append((aid, progress))
    )
    monkeypatch.setattr(progress, "_clock", lambda: calls["now"])
    progress.set_terminal(lambda stage, done, total: calls["bar"].append((stage, done, total)))
    yield calls
    progress.set_terminal(None)


def test_artifact_updates_are_throttled_and_the_bar_is_not(recorded: dict) -> None:
    report = progress.stage_progress("shard")
    for done in range(1, 5):  # four units within the first second: no API call yet
        recorded["now"] = 0.1 * done
        report(done, 10, "unit")
    assert recorded["updates"] == []
    recorded["now"] = 1.05
    report(5, 10, "unit")
    assert recorded["updates"] == [("artifact-id", 50.0)]
    recorded["now"] = 1.5  # within a second of the last update
    report(6, 10, "unit")
    recorded["now"] = 1.6
    report(10, 10, "unit")  # the end is always shown
    assert recorded["updates"] == [("artifact-id", 50.0), ("artifact-id", 100.0)]
    assert [b[1] for b in recorded["bar"]] == [1, 2, 3, 4, 5, 6, 10]


def test_a_stage_without_units_is_done(recorded: dict) -> None:
    report = progress.stage_progress("report")
    report(0, 0, "unit")
    assert recorded["updates"] == [("artifact-id", 100.0)]
