"""Stages sent away from this process as Ray jobs: a stage on the `ray` engine with
`execution.submit` set to `rayjob` (a KubeRay RayJob) or `ray-jobs` (a running cluster's Jobs API)
runs `python -m ray_jobs STAGE --spec <workdir>/spec.json` there. The job's status changes stream
into the Prefect run as log lines and as a markdown artifact `<stage>-ray-job` with the Ray
dashboard link; its failure fails the stage with its reason. A stage whose job an earlier, killed
run left running (mvlp_core.joblock) is not submitted again: the stage fails naming that job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from flows import job_client
from mvlp_core import joblock, pipeline
from mvlp_core.spec import PipelineSpec


def is_submitted(spec: PipelineSpec, stage: str) -> bool:
    """Whether `stage` runs as a Ray job away from this process."""
    return spec.execution.submit != "here" and pipeline.engine_of(spec, stage) != "local"


def _run_id() -> str:
    """The flow run's id (short): a stage's job name carries it, so a retry of the stage's task
    finds the job its earlier try submitted (job_client). Inside a task, Prefect's context is the
    task run's, which holds the flow run's id; outside any run, the time of day."""
    try:
        ctx = get_run_context()
    except RuntimeError:
        return datetime.now(UTC).strftime("%H%M%S")
    task_run = getattr(ctx, "task_run", None)
    flow_run_id = task_run.flow_run_id if task_run is not None else ctx.flow_run.id
    return str(flow_run_id)[:8]


def status_markdown(stage: str, submit: str, history: list[job_client.JobStatus]) -> str:
    now = history[-1]
    link = f"[Ray dashboard]({now.dashboard_url})" if now.dashboard_url else "Ray dashboard: not known yet"
    rows = "\n".join(
        f"| {i + 1} | {s.state} | {s.deployment or '-'} | {s.message or '-'} |" for i, s in enumerate(history)
    )
    return (
        f"### {stage}: Ray job `{now.job}` ({submit})\n\n**{now.state}** {now.deployment} · {link}\n\n"
        f"| # | job status | deployment | message |\n|---|---|---|---|\n{rows}\n"
    )


def run_submitted(
    spec: PipelineSpec, stage: str, *, force: bool = False, keep: bool = False
) -> job_client.JobStatus:
    """Submit the stage's Ray job per `spec.execution`, follow it, fail with its reason."""
    logger = get_run_logger()
    execution = spec.execution
    name = job_client.job_name(spec.name, stage, _run_id())
    joblock.refuse_if_held(spec.workdir, stage, own=name)  # this run's own job: a retry follows it
    pipeline.save_spec(spec)  # the job reads the resolved spec from shared storage
    command = job_client.entrypoint(stage, Path(spec.workdir) / pipeline.SPEC_FILE)
    command += " --force" * force + " --keep" * keep + f" --job {name}"
    history: list[job_client.JobStatus] = []

    def on_status(status: job_client.JobStatus) -> None:
        history.append(status)
        logger.info(
            "%s: Ray job %s %s %s%s%s",
            stage,
            status.job,
            status.state,
            status.deployment,
            f" — {status.message}" if status.message else "",
            f" ({status.dashboard_url})" if status.dashboard_url else "",
        )
        create_markdown_artifact(
            key=f"{stage}-ray-job",
            markdown=status_markdown(stage, execution.submit, history),
            description=f"{stage}: Ray job status and dashboard link",
        )

    logger.info("%s: submitting `%s` (%s)", stage, command, execution.submit)
    if execution.submit == "rayjob":
        labels = {
            "app.kubernetes.io/part-of": "mvlp",
            "mvlp.io/stage": stage,
            "mvlp.io/pipeline": job_client.label_value(spec.name),
        }
        body = job_client.rayjob_body(execution.rayjob, stage, name, command, labels)
        return job_client.run_rayjob(
            job_client.kubernetes_api(),
            body,
            on_status=on_status,
            poll_seconds=execution.poll_seconds,
            timeout_seconds=execution.timeout_seconds,
            dashboard_url=execution.rayjob.dashboard_url,
        )
    runtime_env: dict[str, Any] = {"working_dir": execution.working_dir} if execution.working_dir else {}
    return job_client.run_on_ray_cluster(
        execution.jobs_address,
        command,
        name,
        on_status=on_status,
        poll_seconds=execution.poll_seconds,
        timeout_seconds=execution.timeout_seconds,
        runtime_env=runtime_env,
    )
