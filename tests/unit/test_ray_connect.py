"""`connect` starts a local Ray with the project on the workers' path and a short Ray Train poll,
and joins a cluster without touching either (monkeypatched `ray.init`: no Ray starts here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mvlp_core.spec import load_spec


@pytest.fixture
def init_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import ray

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    monkeypatch.setenv("PYTHONPATH", "")
    return calls


def test_a_local_ray_polls_its_train_workers_often(init_calls, tmp_path: Path) -> None:
    import os

    from ray_jobs.connect import ROOT, connect

    connect(load_spec("demo", [], tmp_path), num_cpus=2)
    assert init_calls == [{"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}]
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.2"
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)


def test_a_users_poll_setting_and_a_cluster_are_left_alone(
    init_calls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    from ray_jobs.connect import connect

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "5")
    connect(load_spec("demo", [], tmp_path))
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "5"

    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
    connect(load_spec("demo", ["execution.ray_address=ray://head:10001"], tmp_path))
    assert init_calls[-1]["address"] == "ray://head:10001"
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in os.environ
