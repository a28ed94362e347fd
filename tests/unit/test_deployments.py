"""Deployment definitions without a server (the registration itself is tested against a real
Prefect server in tests/integration/test_prefect_deployments.py, marked slow): one deployment per
stage flow plus the pipeline, schedule and parameters from the spec, prefect.yaml current."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from flows import deploy
from mvlp_core import pipeline
from mvlp_core.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_without_api_url_names_the_fix(tmp_path: Path) -> None:
    from testkit.prefect_server import mvlp

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path)
    out = mvlp(env, "deploy", "demo")
    assert out.returncode == 2 and "PREFECT_API_URL is not set" in out.stderr


def test_every_stage_flow_and_the_pipeline_get_a_deployment() -> None:
    spec = load_spec("demo", ["schedule=0 4 * * *", "timezone=Europe/Berlin"])
    deps = deploy.build_deployments(spec, "demo", ["qa.pairs_per_caption=2"], "pool-x", "process")
    names = [f"{d.flow_name}/{d.name}" for d in deps]
    assert names == ["mvlp-data-pipeline/demo"] + [f"{s}/demo" for s in pipeline.names()]
    top, *stages = deps
    (sched,) = top.schedules
    assert sched.schedule.cron == "0 4 * * *" and sched.schedule.timezone == "Europe/Berlin"
    assert top.parameters == {
        "spec_path": "data_specs/pipelines/demo.yaml",
        "workdir": None,
        "overrides": ["qa.pairs_per_caption=2"],
        "start": None,
        "stop": None,
        "only": None,
        "force": False,
    }
    for d, stage in zip(stages, pipeline.names()):
        assert d.entrypoint == deploy.stage_entrypoint(stage) and not d.schedules
        assert d.work_pool_name == "pool-x" and d.concurrency_limit == 1
        assert d.job_variables["working_dir"] == str(ROOT)


def test_kubernetes_pool_uses_the_spec_image_and_namespace() -> None:
    spec = load_spec(
        "demo", ["execution.rayjob.cpu_image=reg/mvlp:9-cpu", "execution.rayjob.namespace=mvlp-dev"]
    )
    d = deploy.build_deployments(spec, "demo", [], "mvlp-k8s", "kubernetes")[0]
    assert d.job_variables == {"image": "reg/mvlp:9-cpu", "namespace": "mvlp-dev"}
    sized = load_spec("demo", ["execution.pod.cpu_limit=16", "execution.pod.memory_request=48Gi"])
    job = deploy.build_deployments(sized, "demo", [], "mvlp-k8s", "kubernetes")[0].job_variables
    assert job["cpu_limit"] == "16" and job["memory_request"] == "48Gi" and "cpu_request" not in job
    template = json.loads(deploy.K8S_POOL_TEMPLATE.read_text())
    props = template["variables"]["properties"]
    assert {"image", "namespace", "cpu_limit", "memory_limit", "service_account_name"} <= set(props)
    assert props["service_account_name"]["default"] == "mvlp-runner"
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]) == {"requests", "limits"}


def test_prefect_yaml_is_generated_from_the_stage_flows() -> None:
    text = (ROOT / "prefect.yaml").read_text()
    assert text == deploy.render_prefect_yaml(), "regenerate: python -m flows.deploy --write-prefect-yaml"
    entrypoints = [d["entrypoint"] for d in yaml.safe_load(text)["deployments"]]
    assert entrypoints == [deploy.PIPELINE_ENTRYPOINT] + [
        deploy.stage_entrypoint(s) for s in pipeline.names()
    ]
