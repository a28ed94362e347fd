"""Ray-backed stages away from this process: the spec's `cluster.mode` picks a KubeRay RayJob
(`rayjob`) or a running Ray cluster (`ray_address`); `local` keeps the in-process path.

A stage is Ray-backed when it has an entrypoint module `ray_jobs.<stage>` (found generically, so
new stages need no registration here). The job's status changes stream into the Prefect run as
log lines and as a markdown artifact `<stage>-ray-job` with the Ray dashboard link.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from mvlp_core import pipeline
from mvlp_core.spec import PipelineSpec
from ray_jobs import submit


def ray_entrypoint_module(stage: str) -> str | None:
    name = f"ray_jobs.{stage.replace('-', '_')}"
    return name if importlib.util.find_spec(name) is not None else None


def runs_remotely(spec: PipelineSpec, stage: str) -> bool:
    return spec.cluster.mode != "local" and ray_entrypoint_module(stage) is not None


def _run_id() -> str:
    try:
        return str(get_run_context().flow_run.id)[:8]
    except (RuntimeError, AttributeError):
        return datetime.now(UTC).strftime("%H%M%S")


def status_markdown(stage: str, mode: str, history: list[submit.JobStatus]) -> str:
    now = history[-1]
    link = f"[Ray dashboard]({now.dashboard_url})" if now.dashboard_url else "Ray dashboard: not known yet"
    rows = "\n".join(
        f"| {i + 1} | {s.state} | {s.deployment or '-'} | {s.message or '-'} |" for i, s in enumerate(history)
    )
    return (
        f"### {stage}: Ray job `{now.job}` ({mode})\n\n**{now.state}** {now.deployment} · {link}\n\n"
        f"| # | job status | deployment | message |\n|---|---|---|---|\n{rows}\n"
    )


def run_remote(spec: PipelineSpec, stage: str, *, force: bool = False) -> submit.JobStatus:
    """Submit the stage's Ray entrypoint per `spec.cluster`, follow it, fail with its reason."""
    logger = get_run_logger()
    pipeline.save_spec(spec)  # the job reads the resolved spec from shared storage
    command = submit.entrypoint(stage, Path(spec.workdir) / pipeline.SPEC_FILE) + (
        " --force" if force else ""
    )
    cluster = spec.cluster
    name = submit.job_name(spec.name, stage, _run_id())
    history: list[submit.JobStatus] = []

    def on_status(status: submit.JobStatus) -> None:
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
            markdown=status_markdown(stage, cluster.mode, history),
            description=f"{stage}: Ray job status and dashboard link",
        )

    logger.info("%s: submitting `%s` (%s)", stage, command, cluster.mode)
    if cluster.mode == "rayjob":
        labels = {"app.kubernetes.io/part-of": "mvlp", "mvlp.io/stage": stage, "mvlp.io/pipeline": spec.name}
        body = submit.rayjob_body(cluster, stage, name, command, labels)
        return submit.run_rayjob(
            submit.kubernetes_api(),
            body,
            on_status=on_status,
            poll_seconds=cluster.poll_seconds,
            timeout_seconds=cluster.timeout_seconds,
            dashboard_url=cluster.dashboard_url,
        )
    runtime_env: dict[str, Any] = {"working_dir": cluster.working_dir} if cluster.working_dir else {}
    return submit.run_on_ray_cluster(
        cluster.address,
        command,
        name,
        on_status=on_status,
        poll_seconds=cluster.poll_seconds,
        timeout_seconds=cluster.timeout_seconds,
        runtime_env=runtime_env,
    )
