"""The Prefect flows under Prefect's test harness: one parent run, one child run per stage,
progress and summary artifacts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import FlowRunSort
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline_flow import data_pipeline
from mvlp_core import contract, pipeline

# iglue-eval here shows the flow wiring, not the model: one task, no fine-tune, a few items
CHEAP_IGLUE = [
    "iglue.tasks=[xvnli]",
    "iglue.finetune.epochs=0",
    "iglue.max_test_items=8",
    "iglue.languages={xvnli: [de]}",
]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=180):  # shared 2-core CI machines are slow
        yield


async def _runs_and_artifacts():
    async with get_client() as client:
        runs = await client.read_flow_runs(limit=200, sort=FlowRunSort.START_TIME_ASC)
        response = await client._client.post("/artifacts/filter", json={"limit": 200})
        artifacts = [Artifact.model_validate(a) for a in response.json()]
        return runs, artifacts


def test_pipeline_records_stage_runs(harness, tmp_path: Path) -> None:
    fast = [
        "models=null",  # the flow wiring with one model; the demo's two: tests/e2e/test_demo.py
        "dataset.samples=30",
        "shard.samples_per_shard=16",
        "pretrain.max_steps=4",
        "pretrain.log_every=2",
        "pretrain.checkpoint_every=4",
        "execution.engines={pretrain: local}",  # the flow wiring, not Ray Train (test_pretrain_ray.py)
        *CHEAP_IGLUE,
    ]
    result = data_pipeline("demo", str(tmp_path), fast)
    assert list(result) == list(pipeline.names())
    assert all(s["state"] == "complete" for s in result.values())
    assert result["shard"]["samples_out"] == 30
    runs, artifacts = asyncio.run(_runs_and_artifacts())
    parent = [r for r in runs if r.parent_task_run_id is None and r.name != "synth"]
    children = {r.name for r in runs if r.parent_task_run_id is not None}
    assert len(parent) == 1
    assert set(pipeline.names()) | {"synth"} <= children
    keys = {a.key for a in artifacts}
    assert {f"{s}-summary" for s in pipeline.names()} <= keys
    assert {f"{s}-progress" for s in pipeline.names()} <= keys
    assert {f"{s}-rejects" for s in pipeline.names()} <= keys
    assert {f"{s}-throughput" for s in pipeline.names()} <= keys
    # the download stage's rejects artifact carries the world's bad URLs with their reasons
    download_rejects = next(a.data for a in artifacts if a.key == "download-rejects")
    rows = download_rejects if isinstance(download_rejects, list) else json.loads(download_rejects)
    reasons = {r["reason"]: r["count"] for r in rows}
    assert reasons == result["download"]["rejects"] and reasons.get("http_404", 0) > 0
    assert "pipeline-summary" in keys
    assert {"iglue-eval-results", "iglue-eval-bars", "run-report"} <= keys
    assert "xvnli" in str([a.data for a in artifacts if a.key == "iglue-eval-results"])
    progress = [a for a in artifacts if a.type == "progress"]
    assert progress and all(a.data == 100.0 for a in progress)


def _rayjob_spec(api, tmp_path: Path, monkeypatch):
    """The demo spec with its Ray stages sent as RayJobs through the (checked) client `api`."""
    from flows import job_client
    from mvlp_core.spec import load_spec

    monkeypatch.setattr(job_client, "kubernetes_api", lambda: api)
    return load_spec(
        "demo",
        ["execution.submit=rayjob", "execution.rayjob.namespace=mvlp-dev", "execution.poll_seconds=0.01"],
        tmp_path,
    )


def test_rayjob_stage_streams_status_into_the_run_and_fails_with_the_reason(
    harness, tmp_path: Path, monkeypatch
) -> None:
    """execution.submit=rayjob inside a real flow run: the RayJob created through the (checked)
    Kubernetes client, each status change logged and kept in the `<stage>-ray-job` artifact with
    the dashboard link, and the job's failure reason failing the stage."""
    from unittest import mock

    from kubernetes import client as k8s
    from prefect import flow

    from flows import submitted
    from mvlp_core.contract import StageError

    api = mock.create_autospec(k8s.CustomObjectsApi, instance=True)
    dash = {"dashboardURL": "mvlp-pretrain-head-svc:8265"}
    api.get_namespaced_custom_object.side_effect = [
        {"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", **dash}},
        {
            "status": {
                "jobDeploymentStatus": "Failed",
                "jobStatus": "FAILED",
                "reason": "AppFailed",
                "message": "entrypoint exited with code 2",
                **dash,
            }
        },
    ]
    spec = _rayjob_spec(api, tmp_path, monkeypatch)

    @flow(name="rayjob-probe")
    def probe() -> None:
        submitted.run_submitted(spec, "pretrain")

    with pytest.raises(StageError, match="AppFailed entrypoint exited with code 2"):
        probe()
    ((args, _),) = api.create_namespaced_custom_object.call_args_list
    assert args[:4] == ("ray.io", "v1", "mvlp-dev", "rayjobs")
    name = args[4]["metadata"]["name"]
    assert (
        args[4]["spec"]["entrypoint"]
        == f"python -m ray_jobs pretrain --spec {tmp_path}/spec.json --job {name}"
    )
    assert (tmp_path / "spec.json").exists()  # the job reads the resolved spec from shared storage
    _, artifacts = asyncio.run(_runs_and_artifacts())
    job = [a for a in artifacts if a.key == "pretrain-ray-job"]
    assert len(job) == 2  # one version per status change
    latest = max(job, key=lambda a: a.created)
    assert "[Ray dashboard](http://mvlp-pretrain-head-svc:8265)" in latest.data
    assert "FAILED" in latest.data and "AppFailed" in latest.data


def test_a_stage_added_as_one_module_and_one_registry_line_runs(harness, tmp_path: Path, monkeypatch) -> None:
    """tests/toy_stage.py plus its line in the registry: the DAG, the CLI (run, summary, status)
    and the Prefect flows (a child flow run, summary and shown artifacts) take it with no other
    change."""
    import io

    from rich.console import Console
    from typer.testing import CliRunner

    from flows import cli
    from flows.cli import app
    from mvlp_core import registry
    from tests import toy_stage

    printed = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=printed, width=200))
    stages = list(registry.STAGES)
    monkeypatch.setattr(registry, "STAGES", (stages[0], toy_stage.STAGE, *stages[1:]))  # the one line
    workdir = tmp_path / "run"
    args = ["run", "demo", "--workdir", str(workdir), "--to", "caption-stats", "--set", "dataset.samples=20"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "caption-stats" in printed.getvalue() and "Caption stats: " in printed.getvalue()
    folder = workdir / "caption-stats"
    ingested = contract.Manifest.load(workdir / "ingest").samples_out
    manifest = contract.Manifest.load(folder)
    assert manifest.samples_in == ingested == manifest.samples_out + sum(manifest.rejects.values())
    assert manifest.extra["captions"] == manifest.samples_out > 0
    assert any(p.endswith("tests/toy_stage.py") for p in manifest.basis["code"])
    runs, artifacts = asyncio.run(_runs_and_artifacts())
    assert "caption-stats" in {r.name for r in runs if r.parent_task_run_id is not None}
    keys = {a.key for a in artifacts}
    assert {"caption-stats-summary", "caption-stats-progress", "caption-stats-shards"} <= keys
    status = CliRunner().invoke(app, ["status", "--workdir", str(workdir), "--json"])
    assert json.loads(status.output)["stages"]["caption-stats"]["state"] == "complete"
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "nothing to recompute" in printed.getvalue()


def test_a_retried_rayjob_stage_follows_the_job_its_first_try_created(
    harness, tmp_path: Path, monkeypatch
) -> None:
    """The stage's task, retried after a transient error while it followed its RayJob (a dropped
    connection to the Kubernetes API), meets the job its first try created: the same name, since
    the name carries the flow run's id (read from inside the task), and it follows that job to its
    end instead of creating a second one on the GPUs."""
    from unittest import mock

    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException
    from prefect import flow

    from flows.stage_flows import run_stage_task

    api = mock.create_autospec(k8s.CustomObjectsApi, instance=True)
    created: list[dict] = []

    def create(group, version, namespace, plural, body):
        if created:
            raise ApiException(status=409, reason="AlreadyExists")
        created.append(body)

    replies = iter(
        [
            ConnectionError("connection reset by peer"),  # the first try's first poll
            "the existing job",  # the retry's look at the job its 409 names
            {"status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}},
        ]
    )

    def get(group, version, namespace, plural, name):
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return {"spec": created[0]["spec"]} if reply == "the existing job" else reply

    api.create_namespaced_custom_object.side_effect = create
    api.get_namespaced_custom_object.side_effect = get
    spec = _rayjob_spec(api, tmp_path, monkeypatch)

    @flow(name="rayjob-retry-probe")
    def probe() -> str:
        from prefect.runtime import flow_run

        run_stage_task.with_options(retry_delay_seconds=0, cache_policy=None)(spec, "pretrain")
        return flow_run.id

    flow_run_id = probe()
    names = [c.args[4]["metadata"]["name"] for c in api.create_namespaced_custom_object.call_args_list]
    assert len(names) == 2 and names[0] == names[1] and names[0].endswith(flow_run_id[:8])
    api.delete_namespaced_custom_object.assert_not_called()


def test_a_stage_whose_job_a_killed_run_left_running_is_not_submitted_again(
    harness, tmp_path: Path, monkeypatch
) -> None:
    """A killed run's RayJob still holds the stage (mvlp_core.joblock): the next run's stage fails
    naming it and creates no second job; the lock held by this run's own job (a retried task) is
    no obstacle, and the job is told its name."""
    from unittest import mock

    from kubernetes import client as k8s
    from prefect import flow

    from flows import job_client, submitted
    from mvlp_core import joblock
    from mvlp_core.contract import StageError

    api = mock.create_autospec(k8s.CustomObjectsApi, instance=True)
    api.get_namespaced_custom_object.return_value = {
        "status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    }
    spec = _rayjob_spec(api, tmp_path, monkeypatch)

    @flow(name="rayjob-orphan-probe")
    def probe(holder: str | None) -> None:
        own = job_client.job_name(spec.name, "pretrain", submitted._run_id())
        with joblock.holding(tmp_path, "pretrain", holder or own):
            submitted.run_submitted(spec, "pretrain")

    with pytest.raises(StageError, match="another Ray job \\(mvlp-pretrain-demo-0ld0rph4"):
        probe("mvlp-pretrain-demo-0ld0rph4")
    api.create_namespaced_custom_object.assert_not_called()
    assert not (tmp_path / "spec.json").exists()  # the running job's spec is left as it was

    probe(None)
    ((args, _),) = api.create_namespaced_custom_object.call_args_list
    assert args[4]["spec"]["entrypoint"].endswith(f" --job {args[4]['metadata']['name']}")


def test_a_gpu_slot_is_kept_through_a_prefect_server_outage(harness, monkeypatch) -> None:
    """A stage holding a GPU slot while the Prefect server cannot renew its lease (a restart) goes
    on: Prefect's strict mode would cancel it a few seconds into the outage, while its job ran on."""
    import threading

    from prefect.client.orchestration import SyncPrefectClient

    from flows import concurrency

    def renew(self, lease_id, lease_duration):
        raise ConnectionError("the Prefect server is restarting")

    monkeypatch.setattr(SyncPrefectClient, "renew_concurrency_lease", renew)
    finished = False
    with concurrency.hold("test-gpu-outage", 1):
        (renewal,) = [t for t in threading.enumerate() if t.name.startswith("concurrency-lease-renewal-")]
        renewal.join()  # its three tries failed and its failure handler ran
        finished = True  # a cancelled block stops before here
    assert finished


def test_the_latest_pipeline_run_is_not_a_schedules_future_run(harness) -> None:
    """A schedule's runs are created ahead of time: `mvlp status --api` reads the run due last by
    now, not one due tomorrow with no stages yet."""
    from datetime import UTC, datetime, timedelta

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Scheduled

    from flows.deploy import PIPELINE_FLOW
    from flows.deployment_runs import latest_pipeline_run

    pipeline_flow = flow(name=PIPELINE_FLOW)(lambda: None)
    with get_client(sync_client=True) as client:
        done = client.create_flow_run(pipeline_flow, state=Completed())
        client.create_flow_run(
            pipeline_flow, state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=1))
        )
        assert latest_pipeline_run(client).id == done.id
