"""Deployments against a REAL Prefect server started by the test: `mvlp deploy` registers the
pipeline and every stage flow (cron from the spec, parameters = spec path + overrides, a process
work pool); `mvlp run --remote` runs through a process worker and follows the run; a stage re-run
is a cache hit on the stage fingerprint; `mvlp status --api` reads the stage runs; the server's
scheduler creates the runs a deployed cron schedule asks for."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prefect.client.schemas.sorting import DeploymentSort, TaskRunSort
from testkit.prefect_server import mvlp, prefect_server, process_worker

from mvlp_core import pipeline

pytestmark = pytest.mark.slow  # a real Prefect server: ~60 s to start on a loaded 2-core box

POOL = "mvlp-test-pool"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # the scheduler's loop is 60 s by default; 1 s lets the schedule test see its runs promptly
    settings = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"}
    with prefect_server(tmp_path_factory.mktemp("prefect-home"), settings=settings) as env:
        yield env


def _client(env):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Ctx:
        def __enter__(self):
            self._settings = temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]})
            self._settings.__enter__()
            self._client = get_client(sync_client=True).__enter__()
            return self._client

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return _Ctx()


def _run_remote(env: dict[str, str], workdir: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    """`mvlp run demo --remote` of 12 samples into `workdir`, the stages chosen by `selection`."""
    options = ["--workdir", str(workdir), "--set", "dataset.samples=12", "--poll", "0.5"]
    return mvlp(env, "run", "demo", "--remote", *selection, *options)


def test_deploy_registers_pipeline_and_stage_deployments(server) -> None:
    out = mvlp(server, "deploy", "demo", "--work-pool", POOL, "--set", "schedule=30 2 * * 1")
    assert out.returncode == 0, out.stdout + out.stderr
    with _client(server) as client:
        pool = client.read_work_pool(POOL)
        assert pool.type == "process"
        deployments = {
            f"{client.read_flow(d.flow_id).name}/{d.name}": d
            for d in client.read_deployments(limit=100, sort=DeploymentSort.NAME_ASC)
        }
        expected = {"mvlp-data-pipeline/demo"} | {f"{s}/demo" for s in pipeline.names()}
        assert expected <= set(deployments)
        top = deployments["mvlp-data-pipeline/demo"]
        assert [s.schedule.cron for s in top.schedules] == ["30 2 * * 1"]
        assert top.parameters["spec_path"] == "data_specs/pipelines/demo.yaml"
        assert top.parameters["overrides"] == ["schedule=30 2 * * 1"]
        assert top.work_pool_name == POOL and top.global_concurrency_limit.limit == 1
        shard = deployments["shard/demo"]
        assert shard.entrypoint == "flows.stage_flows.shard_flow" and not shard.schedules
        assert shard.job_variables["working_dir"] == str(Path(__file__).resolve().parents[2])


def test_run_remote_through_a_worker_then_cached_stage_rerun(server, tmp_path: Path) -> None:
    assert mvlp(server, "deploy", "demo", "--work-pool", POOL).returncode == 0
    workdir = tmp_path / "run"
    with process_worker(server, POOL, tmp_path / "worker.log"):
        out = _run_remote(server, workdir, "--to", "ingest")
        assert out.returncode == 0, out.stdout + out.stderr + (tmp_path / "worker.log").read_text()[-3000:]
        assert "Completed" in out.stdout and "ingest" in out.stdout
        assert (workdir / "ingest" / "_manifest.json").exists()
        status = mvlp(server, "status", "--api", "--json")
        report = json.loads(status.stdout)
        assert report["run"]["state"] == "completed"
        assert report["stages"]["ingest"]["state"] == "completed"

        again = _run_remote(server, workdir, "--only", "ingest")
        assert again.returncode == 0, again.stdout + again.stderr
    with _client(server) as client:
        task_runs = [
            t
            for t in client.read_task_runs(limit=200, sort=TaskRunSort.EXPECTED_START_TIME_ASC)
            if t.name == "run-ingest"
        ]
        assert sorted(t.state.name for t in task_runs) == ["Cached", "Completed"]


def _scheduled_runs(env, deployment_name: str, least: int, timeout: float = 120) -> list:
    """The Scheduled flow runs of `deployment_name`, once there are at least `least` (polling the
    API: the scheduler service creates them on its own loop)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deadline = time.monotonic() + timeout
    with _client(env) as client:
        while True:
            runs = [
                r
                for r in client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
                    limit=200,
                )
                if r.state and r.state.is_scheduled()
            ]
            if len(runs) >= least or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)  # polling the API for the scheduler's work, not a synchronisation sleep


def test_deployed_schedule_gets_its_runs_created(server) -> None:
    """The deployed cron reaches the server's scheduler, which creates its runs at the cron's
    times in the spec's time zone (this failed on every loop with SQLAlchemy 2.1: see the pin in
    pyproject.toml)."""
    out = mvlp(
        server,
        *("deploy", "demo", "--work-pool", POOL, "--set", "name=weekly"),
        *("--set", "schedule=15 3 * * 2", "--set", "timezone=Europe/Berlin"),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    runs = _scheduled_runs(server, "weekly", least=3)
    assert len(runs) >= 3, f"the scheduler created {len(runs)} runs of the weekly deployment"
    starts = sorted(r.expected_start_time.astimezone(ZoneInfo("Europe/Berlin")) for r in runs)
    assert {(s.weekday(), s.hour, s.minute) for s in starts} == {(1, 3, 15)}
    assert all(b - a >= timedelta(days=6) for a, b in zip(starts, starts[1:]))
    assert {tuple(r.parameters["overrides"]) for r in runs} == {
        ("name=weekly", "schedule=15 3 * * 2", "timezone=Europe/Berlin")
    }
