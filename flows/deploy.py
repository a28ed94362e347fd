"""Deployments: the end-to-end flow and one per stage flow, registered against `PREFECT_API_URL`.

Every registered stage gets a deployment `<stage>/<spec name>` (module-path entrypoint
`flows.stage_flows.<stage>_flow`, so new stages need nothing here); the end-to-end flow gets
`mvlp-data-pipeline/<spec name>`, on the spec's cron `schedule` when it has one. Parameters are
the spec path plus `--set` overrides. Work pools: `process` (one machine; runs in the project
folder) or `kubernetes` (infra/prefect/k8s-work-pool.json: image, namespace, resources, /shared).
`python -m flows.deploy --write-prefect-yaml` regenerates prefect.yaml from the same definitions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from mvlp_core.spec import SPECS_ROOT, PipelineSpec

PROJECT_ROOT = SPECS_ROOT.parent
PIPELINE_FLOW = "mvlp-data-pipeline"
K8S_POOL_TEMPLATE = PROJECT_ROOT / "infra" / "prefect" / "k8s-work-pool.json"
PROCESS_POOL_TEMPLATE = PROJECT_ROOT / "infra" / "prefect" / "process-work-pool.json"
PIPELINE_ENTRYPOINT = "flows.pipeline_flow.data_pipeline"


def stage_entrypoint(stage: str) -> str:
    return f"flows.stage_flows.{stage.replace('-', '_')}_flow"  # stage_flows.flow_attribute


def deployment_name(spec: PipelineSpec, stage: str | None = None) -> str:
    """`flow name/deployment name` as run_deployment takes it."""
    return f"{stage or PIPELINE_FLOW}/{spec.name}"


def spec_param(spec_path: str | Path) -> str:
    """The spec path as the worker sees it: relative to the project root when inside it (the
    image has the project at /app), absolute otherwise."""
    path = Path(spec_path)
    if not path.exists():  # a built-in spec by name, as load_spec resolves it
        path = SPECS_ROOT / "pipelines" / f"{path.stem}.yaml"
    path = path.resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path) if path.exists() else str(spec_path)


def job_variables(spec: PipelineSpec, pool_type: str) -> dict[str, Any]:
    if pool_type == "kubernetes":
        ex = spec.execution
        pod = {k: v for k, v in ex.pod.model_dump().items() if v is not None}
        return {"image": ex.rayjob.cpu_image, "namespace": ex.rayjob.namespace, **pod}
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"working_dir": str(PROJECT_ROOT), "env": {"PYTHONPATH": pythonpath}}


def build_deployments(
    spec: PipelineSpec, spec_path: str | Path, overrides: list[str], work_pool: str, pool_type: str
) -> list[Any]:
    """RunnerDeployments for the pipeline and every stage flow (not yet registered)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.pipeline_flow import data_pipeline
    from flows.stage_flows import stage_flow
    from mvlp_core import pipeline

    base = {"spec_path": spec_param(spec_path), "workdir": None, "overrides": list(overrides)}
    common = {
        "work_pool_name": work_pool,
        "job_variables": job_variables(spec, pool_type),
        "entrypoint_type": EntrypointType.MODULE_PATH,
        "tags": ["mvlp", f"pipeline:{spec.name}"],
    }
    schedules = [Cron(spec.schedule, timezone=spec.timezone)] if spec.schedule else []
    out = [
        data_pipeline.to_deployment(
            spec.name,
            parameters={**base, "start": None, "stop": None, "only": None, "force": False},
            schedules=schedules,
            concurrency_limit=1,
            description=f"{spec.name}: the whole DAG",
            **common,
        )
    ]
    for stage in pipeline.names():
        out.append(
            stage_flow(stage).to_deployment(
                spec.name,
                parameters={**base, "force": False},
                concurrency_limit=1,
                description=f"{spec.name}: re-run the {stage} stage alone from its inputs",
                **common,
            )
        )
    return out


def ensure_work_pool(client: Any, name: str, pool_type: str) -> None:
    """Create the pool with the project's base job template when it does not exist yet."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_work_pool(name)
        return
    except ObjectNotFound:
        pass
    template_file = K8S_POOL_TEMPLATE if pool_type == "kubernetes" else PROCESS_POOL_TEMPLATE
    template = json.loads(template_file.read_text(encoding="utf-8"))
    client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template))


def deploy(
    spec: PipelineSpec, spec_path: str | Path, overrides: list[str], work_pool: str, pool_type: str
) -> list[str]:
    """Register the deployments (and the work pool if missing); returns `flow/deployment` names."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        ensure_work_pool(client, work_pool, pool_type)
    names = []
    for deployment in build_deployments(spec, spec_path, overrides, work_pool, pool_type):
        deployment.apply()
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names


def prefect_yaml(stages: list[str]) -> dict[str, Any]:
    """prefect.yaml for `prefect deploy --all` (demo spec, process pool `mvlp-local`)."""
    params = {"spec_path": "data_specs/pipelines/demo.yaml", "workdir": None, "overrides": []}
    pool = {"name": "{{ $MVLP_WORK_POOL }}", "job_variables": {}}
    deployments = [
        {
            "name": "demo",
            "entrypoint": PIPELINE_ENTRYPOINT,
            "description": "demo: the whole DAG",
            "tags": ["mvlp", "pipeline:demo"],
            "concurrency_limit": 1,
            "parameters": {**params, "start": None, "stop": None, "only": None, "force": False},
            "schedules": [],
            "work_pool": pool,
        }
    ]
    for stage in stages:
        deployments.append(
            {
                "name": "demo",
                "entrypoint": stage_entrypoint(stage),
                "description": f"demo: re-run the {stage} stage alone from its inputs",
                "tags": ["mvlp", "pipeline:demo"],
                "concurrency_limit": 1,
                "parameters": {**params, "force": False},
                "work_pool": pool,
            }
        )
    return {
        "name": "mvlp",
        "prefect-version": "3.8.8",
        "build": None,
        "push": None,
        "pull": [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $MVLP_PROJECT_DIR }}"}}
        ],
        "deployments": deployments,
    }


PREFECT_YAML_HEADER = """\
# Generated by `python -m flows.deploy --write-prefect-yaml` from the registered stages;
# do not edit by hand. `mvlp deploy SPEC.yaml` registers the same deployments for any spec (with
# the spec's cron schedule); this file serves `prefect deploy --all` for the demo spec:
#   MVLP_WORK_POOL=mvlp-local MVLP_PROJECT_DIR=$PWD prefect deploy --all
"""


def render_prefect_yaml() -> str:
    from mvlp_core import pipeline

    plain = json.loads(json.dumps(prefect_yaml(pipeline.names())))  # no shared objects: no YAML anchors
    return PREFECT_YAML_HEADER + yaml.safe_dump(plain, sort_keys=False)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--write-prefect-yaml"]:
        raise SystemExit("usage: python -m flows.deploy --write-prefect-yaml")
    (PROJECT_ROOT / "prefect.yaml").write_text(render_prefect_yaml(), encoding="utf-8")
