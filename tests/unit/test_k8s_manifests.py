"""infra/k8s: every rendered manifest validates (Kubernetes 1.30 strict schemas, KubeRay CRDs) and
obeys the cluster policies (requests+limits everywhere, non-root, namespaced least-privilege RBAC,
GPU workers request GPUs)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit.k8s_schema import CRD_DIR, pod_templates, validate
from testkit.kustomize import render

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
OVERLAYS = ["dev", "prod"]
pytestmark = pytest.mark.skipif(not CRD_DIR.exists(), reason=f"KubeRay CRDs not found at {CRD_DIR}")


def _rendered(name: str) -> list[dict[str, Any]]:
    return render(K8S / "overlays" / name)


def _all_docs() -> list[dict[str, Any]]:
    return [d for o in OVERLAYS for d in _rendered(o)] + render(K8S / "base" / "rayjobs")


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str) -> None:
    docs = _rendered(overlay)
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Deployment",
        "RayCluster",
    } <= kinds
    for doc in docs:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == docs[0]["metadata"]["name"]
        assert doc["metadata"]["labels"]["mvlp.io/env"] == overlay


def test_rayjob_templates_validate() -> None:
    jobs = render(K8S / "base" / "rayjobs")
    assert {d["metadata"]["name"] for d in jobs} == {"mvlp-pretrain", "mvlp-iglue-eval"}
    for job in jobs:
        validate(job)
        spec = job["spec"]
        stage = job["metadata"]["labels"]["mvlp.io/stage"]
        assert spec["entrypoint"].startswith(f"python -m ray_jobs {stage} --spec ")
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0 and spec["backoffLimit"] >= 1
        mounts = [
            m
            for t in pod_templates(spec["rayClusterSpec"])
            for c in t["spec"]["containers"]
            for m in c["volumeMounts"]
            if m["name"] == "shared"
        ]
        assert len(mounts) == 2  # head and GPU workers share the storage_path volume


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("folder", [*(f"overlays/{o}" for o in OVERLAYS), "base/rayjobs"])
def test_renderer_agrees_with_kubectl_kustomize(folder: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / folder)], check=True, capture_output=True, text=True
    )
    theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=_key)
    assert sorted(render(K8S / folder), key=_key) == theirs


def test_validation_catches_mistakes() -> None:
    cluster = next(d for d in _rendered("dev") if d["kind"] == "RayCluster")
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpecs"][1]["maxReplica"] = 3
    with pytest.raises(AssertionError, match="maxReplica"):
        validate(typo)
    bad_pod = copy.deepcopy(cluster)
    bad_pod["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(Exception, match="resource"):
        validate(bad_pod)
    deployment = next(d for d in _rendered("dev") if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(Exception, match="replicas"):
        validate(deployment)


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c for t in pod_templates(doc) for c in t["spec"]["containers"] + t["spec"].get("initContainers", [])
    ]


def test_every_container_has_requests_limits_and_runs_non_root() -> None:
    checked = 0
    for doc in _all_docs():
        for tpl in pod_templates(doc):
            pod_sc = tpl["spec"]["securityContext"]
            assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
            assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in _containers(doc):
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), c[
                "name"
            ]
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            checked += 1
        if doc["kind"] == "RayCluster":  # the autoscaler sidecar is a container too
            opts = doc["spec"]["autoscalerOptions"]
            assert opts["resources"]["requests"] and opts["resources"]["limits"]
            assert opts["securityContext"]["runAsNonRoot"] is True
    assert checked >= 14  # 4 per overlay (head, 2 workers, worker) + 3 per RayJob


def test_rbac_is_namespaced_and_least_privilege() -> None:
    for overlay in OVERLAYS:
        docs = _rendered(overlay)
        assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
        assert not [d for d in docs if d["kind"] == "Secret"], "secret values are never committed"
        roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
        for role in roles.values():
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        runner = {
            r["apiGroups"][0] + "/" + res: set(r["verbs"])
            for r in roles["mvlp-runner"]["rules"]
            for res in r["resources"]
        }
        assert runner["ray.io/rayjobs"] == {"create", "get", "list", "watch", "delete"}
        assert runner["ray.io/rayclusters"] <= {"get", "list"}
        assert runner["/pods/log"] == {"get"}
        for binding in (d for d in docs if d["kind"] == "RoleBinding"):
            assert binding["roleRef"]["kind"] == "Role"
            assert all(s["namespace"] == binding["metadata"]["namespace"] for s in binding["subjects"])


def test_gpu_group_requests_gpus_and_autoscales() -> None:
    for overlay in OVERLAYS:
        cluster = next(d for d in _rendered(overlay) if d["kind"] == "RayCluster")
        assert cluster["spec"]["enableInTreeAutoscaling"] is True
        groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
        assert set(groups) == {"cpu", "gpu"}
        for g in groups.values():
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        gpu = groups["gpu"]["template"]["spec"]
        (c,) = gpu["containers"]
        assert (
            c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == "1"
        )
        assert c["image"].endswith("-cuda")
        assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
        assert gpu["nodeSelector"]
        assert "nvidia.com/gpu" not in str(groups["cpu"])
    dev, prod = (next(d for d in _rendered(o) if d["kind"] == "RayCluster") for o in OVERLAYS)
    assert (
        dev["spec"]["workerGroupSpecs"][1]["maxReplicas"] < prod["spec"]["workerGroupSpecs"][1]["maxReplicas"]
    )
