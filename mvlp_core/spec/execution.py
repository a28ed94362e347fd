"""Where each stage runs: the one place for engines, Ray addresses and cluster submission.

A stage runs on one of the engines its descriptor offers (`local`: in this process; `ray`: its
Ray entrypoint in `ray_jobs`). A stage on the `ray` engine either drives Ray from this process
(`submit: here`, connecting to `ray_address`, else `RAY_ADDRESS`, else a local Ray started on
demand), or is sent away as a job: to a running cluster's Jobs API (`submit: ray-jobs`) or as a
KubeRay RayJob (`submit: rayjob`). None of this changes a stage's output, so none of it is
fingerprinted.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StringConstraints

from mvlp_core.spec.base import Strict


class RayJobSpec(Strict):
    """A KubeRay RayJob per stage run, from a template; the job gets its own RayCluster."""

    namespace: str = Field("mvlp", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    image: str = Field("mvlp:0.1.0-cuda", description="GPU worker image")
    cpu_image: str = Field("mvlp:0.1.0-cpu", description="head and submitter image")
    template: str = Field(
        "infra/k8s/base/rayjobs/{stage}.yaml", description="RayJob template; relative to the project root"
    )
    dashboard_url: str | None = Field(
        None, description="Ray dashboard link shown in Prefect (default: the RayJob's status.dashboardURL)"
    )


# Kubernetes quantities; a bare number from YAML (cpu_limit: 16) reads as its text
Cpu = Annotated[str, BeforeValidator(lambda v: str(v)), StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?m?$")]
Memory = Annotated[
    str,
    BeforeValidator(lambda v: str(v)),
    StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"),
]


class PodSpec(Strict):
    """The flow-run pod of a Kubernetes work pool, where the stages on the local engine run (ingest,
    align, shard, text-shard, report): Kubernetes quantities; None keeps the pool's default
    (infra/prefect/k8s-work-pool.json: 4 CPU requested, 8 limit, 16Gi)."""

    cpu_request: Cpu | None = None
    cpu_limit: Cpu | None = None
    memory_request: Memory | None = None
    memory_limit: Memory | None = None


class ExecutionSpec(Strict):
    engines: dict[str, Literal["local", "ray"]] = Field(
        {},
        description="stage -> engine (local: in this process; ray: the stage's Ray entrypoint); "
        "unlisted stages use their default (pretrain: ray, qa with backend vllm: ray, else local)",
    )
    submit: Literal["here", "ray-jobs", "rayjob"] = Field(
        "here",
        description="where a stage on the ray engine runs its driver: here (this process), ray-jobs "
        "(the Ray Jobs API at jobs_address) or rayjob (a KubeRay RayJob per stage run)",
    )
    ray_address: str | None = Field(
        None,
        description="submit here: the Ray cluster to drive (ray://host:10001, auto); "
        "None: RAY_ADDRESS, else a local Ray started on demand",
    )
    jobs_address: str = Field(
        "http://127.0.0.1:8265", description="submit ray-jobs: the Jobs API / dashboard URL"
    )
    working_dir: str | None = Field(None, description="submit ray-jobs: upload this folder as the job's code")
    rayjob: RayJobSpec = RayJobSpec()
    pod: PodSpec = Field(
        PodSpec(), description="mvlp deploy --pool-type kubernetes: the flow-run pod's CPU and memory"
    )
    poll_seconds: float = Field(5.0, gt=0, le=3600, description="seconds between job status reads")
    timeout_seconds: float = Field(
        7 * 86400, gt=0, le=90 * 86400, description="a submitted job running longer fails its stage"
    )
    gpu_slots: int = Field(
        1,
        gt=0,
        le=1024,
        description="submitted stages running at once across runs (a Prefect concurrency limit)",
    )
