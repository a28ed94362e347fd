"""The `ray-jobs` submission path for real: a local Ray head with its dashboard (Jobs API) started by the
test, a tiny entrypoint submitted through JobSubmissionClient, its status streamed, and the
failure path carrying the job's exit reason and log tail."""

from __future__ import annotations

import socket
import sys

import pytest
import ray

from flows import job_client
from mvlp_core.contract import StageError

# A Ray head with its dashboard: 13-50 s. Slow-marked, and flaky where other Ray sessions run on the
# same machine: ray.init cannot move the dashboard agent off its fixed port 52365, so a second
# session's agent may not start ("No available agent to submit job").
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address():
    port = _free_port()
    ctx = ray.init(
        num_cpus=1,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        yield f"http://{ctx.dashboard_url}"
    finally:
        ray.shutdown()


def test_submits_waits_and_streams(ray_address: str) -> None:
    seen: list[job_client.JobStatus] = []
    command = f"{sys.executable} -c \"print('mvlp job ran')\""
    final = job_client.run_on_ray_cluster(
        ray_address,
        command,
        "mvlp-test-ok",
        on_status=seen.append,
        poll_seconds=0.2,
        timeout_seconds=120,
    )
    assert final.state == "SUCCEEDED"
    assert seen[-1].state == "SUCCEEDED" and len({s.state for s in seen}) >= 2
    assert final.dashboard_url == f"{ray_address}/#/jobs/mvlp-test-ok"
    from ray.job_submission import JobSubmissionClient

    assert "mvlp job ran" in JobSubmissionClient(ray_address).get_job_logs("mvlp-test-ok")
    # a retry of the task submits the same id: it follows the job the first try started
    again = job_client.run_on_ray_cluster(
        ray_address, command, "mvlp-test-ok", on_status=seen.append, poll_seconds=0.2, timeout_seconds=120
    )
    assert again.state == "SUCCEEDED" and again.job == "mvlp-test-ok"


def test_failed_job_fails_the_stage_with_its_logs(ray_address: str) -> None:
    command = f"{sys.executable} -c \"import sys; print('bad input shard 7'); sys.exit(3)\""
    seen: list[job_client.JobStatus] = []
    with pytest.raises(
        StageError, match=r"(?s)Ray job mvlp-test-fail FAILED: .*exit code 3.*bad input shard 7"
    ):
        job_client.run_on_ray_cluster(
            ray_address,
            command,
            "mvlp-test-fail",
            on_status=seen.append,
            poll_seconds=0.2,
            timeout_seconds=120,
        )
    assert seen[-1].state == "FAILED"


def test_unreachable_cluster_names_the_field() -> None:
    with pytest.raises(StageError, match="execution.jobs_address"):
        job_client.run_on_ray_cluster(
            f"http://127.0.0.1:{_free_port()}",
            "true",
            "x",
            on_status=print,
            poll_seconds=0.1,
            timeout_seconds=5,
        )
