"""`connect` starts a local Ray with the project on the workers' path, a short Ray Train poll and
the GPUs hidden from tasks given none, and joins a cluster with the path and the hiding, not the
poll (monkeypatched `ray.init`; one test starts a real local Ray to see the hiding work)."""

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
    monkeypatch.delenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
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


def test_tasks_given_no_gpu_see_none_locally_and_on_a_cluster(
    init_calls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    from ray_jobs.connect import connect

    connect(load_spec("demo", [], tmp_path))
    assert os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] == "1"
    connect(load_spec("demo", ["execution.ray_address=ray://head:10001"], tmp_path))
    assert init_calls[-1]["runtime_env"]["env_vars"]["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] == "1"
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # the user's choice is kept
    connect(load_spec("demo", ["execution.ray_address=ray://head:10001"], tmp_path))
    assert init_calls[-1]["runtime_env"]["env_vars"]["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] == "0"


def test_a_submitted_jobs_own_variables_are_not_set_again(
    init_calls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In a job submitted with env vars of its own, ray.init refuses the same keys again (Ray's
    "Failed to merge the Job's runtime env"): the job's values stand, the rest are added."""
    import json

    from ray_jobs.connect import connect

    job = {"runtime_env": {"env_vars": {"PYTHONPATH": "/app", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    connect(load_spec("demo", ["execution.ray_address=ray://head:10001"], tmp_path))
    assert init_calls[-1]["runtime_env"] == {"env_vars": {}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"pip": ["x"]}}))
    connect(load_spec("demo", ["execution.ray_address=ray://head:10001"], tmp_path))
    assert set(init_calls[-1]["runtime_env"]["env_vars"]) == {
        "PYTHONPATH",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO",
    }


def test_a_real_local_ray_hides_the_gpus_from_a_task_given_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ray 2.60 leaves CUDA_VISIBLE_DEVICES unset for such a task unless told (ZERO_GPUS_SEE_NONE);
    on a GPU node it would otherwise see every GPU."""
    import os

    import ray

    from ray_jobs.connect import connect

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # restored afterwards
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")
    if ray.is_initialized():  # an earlier test's Ray, started without it
        ray.shutdown()
    connect(load_spec("demo", [], tmp_path), num_cpus=1)
    try:
        visible = ray.get(ray.remote(num_cpus=0)(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).remote())
    finally:
        ray.shutdown()
    assert visible == ""
