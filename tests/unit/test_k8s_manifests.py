"""infra/k8s: every rendered manifest validates (Kubernetes 1.30 strict schemas, KubeRay CRDs) and
obeys the cluster policies (requests+limits everywhere, non-root, namespaced least-privilege RBAC,
GPU workers request GPUs); every Ray-backed stage has a RayJob template asking for what it needs;
optional secrets and the shared Hugging Face cache reach every Ray pod; PodMonitors select the Ray
pods and their metrics ports; the Prefect server and the work pool's job template hold together."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from testkit.k8s_schema import CRD_DIR, pod_templates, validate
from testkit.kustomize import render

from mvlp_core import pipeline

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
WORK_POOL = ROOT / "infra" / "prefect" / "k8s-work-pool.json"
OVERLAYS = ["dev", "prod"]
MONITORING = {"dev-monitoring": "dev", "prod-monitoring": "prod"}
GPU_STAGES = {"translate", "qa", "pretrain", "iglue-eval"}
CPU_STAGES = {"download"}
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
pytestmark = pytest.mark.skipif(not CRD_DIR.exists(), reason=f"KubeRay CRDs not found at {CRD_DIR}")


def _rendered(name: str) -> list[dict[str, Any]]:
    return render(K8S / "overlays" / name)


def _rayjobs() -> list[dict[str, Any]]:
    return render(K8S / "base" / "rayjobs")


def _all_docs() -> list[dict[str, Any]]:
    return [d for o in OVERLAYS for d in _rendered(o)] + _rayjobs()


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a RayCluster, or the one a RayJob creates."""
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _ray_pods(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(node type, group spec, pod template) for the head and every worker group."""
    spec = _cluster_spec(doc)
    return [("head", spec["headGroupSpec"], spec["headGroupSpec"]["template"])] + [
        ("worker", g, g["template"]) for g in spec["workerGroupSpecs"]
    ]


def _ray_docs() -> list[tuple[str, dict[str, Any]]]:
    """(where, doc) for every RayCluster in the overlays and every RayJob template."""
    out = [(o, d) for o in OVERLAYS for d in _rendered(o) if d["kind"] == "RayCluster"]
    return out + [("rayjobs", d) for d in _rayjobs()]


def _configmap(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    return cm["data"]


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
        "Service",
        "RayCluster",
    } <= kinds
    assert "PodMonitor" not in kinds, "the default overlays need no Prometheus Operator"
    for doc in docs:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == docs[0]["metadata"]["name"]
        assert doc["metadata"]["labels"]["mvlp.io/env"] == overlay


@pytest.mark.parametrize("overlay", sorted(MONITORING))
def test_monitoring_overlay_adds_only_monitoring(overlay: str) -> None:
    """X-monitoring = overlay X + PodMonitors + the Grafana wiring ConfigMap; everything the
    Kubernetes schemas know validates strictly (PodMonitors: test_pod_monitors_*)."""
    docs, base = _rendered(overlay), _rendered(MONITORING[overlay])
    added = sorted(_key(d) for d in docs if d not in base)
    assert added == [
        ("ConfigMap", "mvlp-ray-monitoring"),
        ("PodMonitor", "mvlp-ray-head"),
        ("PodMonitor", "mvlp-ray-workers"),
    ]
    assert len(docs) == len(base) + 3
    for doc in docs:
        assert doc["metadata"]["labels"]["mvlp.io/env"] == MONITORING[overlay]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == base[0]["metadata"]["name"]
        if doc["kind"] != "PodMonitor":
            validate(doc)
    env = _configmap(docs, "mvlp-ray-monitoring")
    assert set(env) == {
        "RAY_GRAFANA_HOST",
        "RAY_PROMETHEUS_HOST",
        "RAY_GRAFANA_IFRAME_HOST",
        "RAY_PROMETHEUS_NAME",
    }
    assert all(env[k].startswith("http://") for k in env if k.endswith("_HOST"))


def _ray_stages() -> set[str]:
    return {name for name, stage in pipeline.stages().items() if "ray" in {e.name for e in stage.engines}}


def test_every_ray_backed_stage_has_a_rayjob_template() -> None:
    """translate, qa, pretrain, iglue-eval and download (and any stage that gains a Ray engine)
    run as RayJobs: flows/job_client.py reads infra/k8s/base/rayjobs/<stage>.yaml as it is, so the
    rendered templates must equal the files."""
    jobs = _rayjobs()
    stages = {j["metadata"]["labels"]["mvlp.io/stage"] for j in jobs}
    assert stages == GPU_STAGES | CPU_STAGES
    assert _ray_stages() <= stages, f"stages with a ray engine but no template: {_ray_stages() - stages}"
    for job in jobs:
        stage = job["metadata"]["labels"]["mvlp.io/stage"]
        assert job["metadata"]["name"] == f"mvlp-{stage}"
        on_disk = yaml.safe_load((K8S / "base" / "rayjobs" / f"{stage}.yaml").read_text(encoding="utf-8"))
        assert on_disk == job, "the rayjobs kustomization must not transform the templates"


def test_rayjob_templates_validate() -> None:
    for job in _rayjobs():
        validate(job)
        spec = job["spec"]
        stage = job["metadata"]["labels"]["mvlp.io/stage"]
        assert spec["entrypoint"].startswith(f"python -m ray_jobs {stage} --spec ")
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0 and spec["backoffLimit"] >= 1
        for _, _, tpl in _ray_pods(job):  # head and workers share the workdir / storage_path volume
            (c,) = tpl["spec"]["containers"]
            assert {"name": "shared", "mountPath": "/shared"} in c["volumeMounts"]
            assert {"name": "shared", "persistentVolumeClaim": {"claimName": "mvlp-shared"}} in tpl["spec"][
                "volumes"
            ]


def _group_resources(job: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(g, g["template"]["spec"]["containers"][0]) for g in _cluster_spec(job)["workerGroupSpecs"]]


@pytest.mark.parametrize("stage", sorted(GPU_STAGES | CPU_STAGES))
def test_each_stage_template_requests_what_it_needs(stage: str) -> None:
    """GPU stages: an autoscaled GPU group (GPU requested = limited = Ray's num-gpus, the cuda
    image, GPU nodes only). download: CPU workers only, nothing asks for or tolerates a GPU."""
    (job,) = [j for j in _rayjobs() if j["metadata"]["labels"]["mvlp.io/stage"] == stage]
    cluster = _cluster_spec(job)
    assert cluster["enableInTreeAutoscaling"] is True
    groups = _group_resources(job)
    assert groups
    for g, c in groups:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["maxReplicas"] >= 1
        req, lim = c["resources"]["requests"], c["resources"]["limits"]
        if stage in GPU_STAGES:
            assert req["nvidia.com/gpu"] == lim["nvidia.com/gpu"] == g["rayStartParams"]["num-gpus"] != "0"
            assert c["image"] == "mvlp-cuda"
            assert any(t["key"] == "nvidia.com/gpu" for t in g["template"]["spec"]["tolerations"])
            assert g["template"]["spec"]["nodeSelector"]
        else:
            assert int(req["cpu"]) >= 4 and c["image"] == "mvlp-cpu"
    if stage in CPU_STAGES:
        assert "nvidia.com/gpu" not in json.dumps(job) and "mvlp-cuda" not in json.dumps(job)
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "no work on the head"
    assert "nvidia.com/gpu" not in json.dumps(head)


def test_rayjob_deadlines_allow_multi_day_pretraining() -> None:
    """One pretrain attempt may run for days; a failed attempt is resubmitted (a fresh RayCluster,
    resuming from the newest checkpoint on /shared) instead of failing the stage."""
    jobs = {j["metadata"]["labels"]["mvlp.io/stage"]: j["spec"] for j in _rayjobs()}
    assert jobs["pretrain"]["activeDeadlineSeconds"] >= 6 * 86400  # UniGen's ~6 days on 8 A100
    assert jobs["pretrain"]["backoffLimit"] >= 2
    for stage, spec in jobs.items():
        assert spec["activeDeadlineSeconds"] >= 86400, stage
        assert spec["activeDeadlineSeconds"] <= jobs["pretrain"]["activeDeadlineSeconds"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize(
    "folder",
    [*(f"overlays/{o}" for o in [*OVERLAYS, *sorted(MONITORING)]), "base/rayjobs", "monitoring"],
)
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
        if doc["kind"] in ("RayCluster", "RayJob"):  # the autoscaler sidecar is a container too
            opts = _cluster_spec(doc)["autoscalerOptions"]
            assert opts["resources"]["requests"] and opts["resources"]["limits"]
            assert opts["securityContext"]["runAsNonRoot"] is True
            assert opts["securityContext"]["readOnlyRootFilesystem"] is True
    # per overlay: Ray head + 2 worker groups + Prefect worker + Prefect server; per RayJob: submitter,
    # head, one worker group
    assert checked == 5 * len(OVERLAYS) + 3 * len(GPU_STAGES | CPU_STAGES)


def test_only_the_autoscaler_gets_an_api_token() -> None:
    """KubeRay's autoscaler sidecar needs the API (it scales the worker groups); Ray code does not.
    Pods automount no token; the head's projected token volume is mounted in the autoscaler only."""
    for where, doc in _ray_docs():
        cluster = _cluster_spec(doc)
        assert cluster["enableInTreeAutoscaling"] is True
        (mount,) = [m for m in cluster["autoscalerOptions"]["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
        head = cluster["headGroupSpec"]["template"]["spec"]
        (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
        sources = volume["projected"]["sources"]
        assert any("serviceAccountToken" in s for s in sources) and mount.get("readOnly") is True
        assert any(s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in sources)
        for _, _, tpl in _ray_pods(doc):
            assert tpl["spec"]["automountServiceAccountToken"] is False, (where, doc["metadata"]["name"])
            assert "serviceAccountName" not in tpl["spec"], "KubeRay creates the head's account and Role"
            assert all(m["name"] != mount["name"] for m in tpl["spec"]["containers"][0]["volumeMounts"])
        if doc["kind"] == "RayJob":
            assert doc["spec"]["submitterPodTemplate"]["spec"]["automountServiceAccountToken"] is False


def _check_secrets_and_cache(
    c: dict[str, Any], pod: dict[str, Any], storage: dict[str, str], what: str
) -> None:
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "mvlp-hf-token",
        "key": "HF_TOKEN",
        "optional": True,
    }, what
    assert {"secretRef": {"name": "mvlp-object-store", "optional": True}} in c["envFrom"], what
    # the http backends' keys (translate.http / qa.http api_key_env): the driver and the actors
    assert {"secretRef": {"name": "mvlp-endpoint-keys", "optional": True}} in c["envFrom"], what
    assert {"configMapRef": {"name": "mvlp-storage"}} in c["envFrom"], what
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert volumes["gcs-key"]["secret"] == {"secretName": "mvlp-gcs-key", "optional": True}, what
    assert (
        mounts["gcs-key"]["readOnly"] is True
        and mounts["gcs-key"]["mountPath"] == "/var/run/secrets/mvlp-gcs"
    )
    # HF_HOME (from mvlp-storage) lies on the shared claim as this container mounts it
    shared = mounts["shared"]["mountPath"].rstrip("/") + "/"
    assert "persistentVolumeClaim" in volumes["shared"], what
    assert (storage["HF_HOME"].rstrip("/") + "/").startswith(shared), what
    assert "HF_HOME" not in env, f"{what}: HF_HOME comes from mvlp-storage"


def test_secrets_and_the_shared_model_cache_reach_every_ray_pod() -> None:
    """Every Ray pod (long-lived cluster and RayJobs): HF_TOKEN from the optional Secret
    mvlp-hf-token, object-store credentials from the optional Secret mvlp-object-store (and the
    optional GCS key file), endpoint keys from the optional Secret mvlp-endpoint-keys, HF_HOME on the shared volume so a checkpoint is fetched once per cluster."""
    base_storage = _configmap(render(K8S / "base"), "mvlp-storage")
    checked = 0
    for where, doc in _ray_docs():
        storage = base_storage if where == "rayjobs" else _configmap(_rendered(where), "mvlp-storage")
        for node_type, _, tpl in _ray_pods(doc):
            (c,) = tpl["spec"]["containers"]
            what = f"{doc['metadata']['name']}/{node_type}"
            _check_secrets_and_cache(c, tpl["spec"], storage, what)
            # a CPU actor on a GPU pod (translate's and qa's default pools) sees no GPU (connect.py)
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"]["value"] == "1", what
            checked += 1
    assert checked == 3 * len(OVERLAYS) + 2 * len(GPU_STAGES | CPU_STAGES)


def test_no_secret_is_committed_and_every_secret_reference_is_optional() -> None:
    docs = [d for o in [*OVERLAYS, *MONITORING] for d in _rendered(o)] + _rayjobs()
    assert not [d for d in docs if d["kind"] == "Secret"], "secret values are never committed"
    text = json.dumps(docs) + WORK_POOL.read_text(encoding="utf-8")
    refs = re.findall(r'"(?:secretKeyRef|secretRef|secret)": (\{[^{}]*\})', text)
    assert len(refs) > 10
    for ref in refs:
        assert json.loads(ref)["optional"] is True, ref


# PodMonitor fields these manifests may use (monitoring.coreos.com/v1; the Prometheus Operator's CRDs
# are not available here to validate against): anything else is a typo the API would reject.
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sourceLabels", "targetLabel"],
    "properties": {
        "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]},
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "targetLabel": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
        "regex": {"type": "string"},
        "replacement": {"type": "string"},
    },
}
POD_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "relabelings": {"type": "array", "items": _RELABEL},
                        },
                    },
                },
            },
        },
    },
}


def _pod_labels(doc: dict[str, Any], node_type: str, tpl: dict[str, Any]) -> dict[str, str]:
    """The labels a Ray pod carries: its template's plus what KubeRay adds to every Ray pod."""
    cluster = doc["metadata"]["name"]
    kuberay = {"ray.io/node-type": node_type, "ray.io/is-ray-node": "yes", "ray.io/cluster": cluster}
    return {**tpl.get("metadata", {}).get("labels", {}), **kuberay}


@pytest.mark.parametrize("overlay", sorted(MONITORING))
def test_pod_monitors_select_every_ray_pod_and_its_metrics_ports(overlay: str) -> None:
    """Each Ray pod (the overlay's RayCluster and every RayJob's, in the same namespace) is selected
    by exactly one PodMonitor, every endpoint port is a named port of its Ray container, the metrics
    port is the one Ray exports on (metrics-export-port), and ray.io/cluster becomes ray_io_cluster
    (the Ray dashboards' Cluster variable)."""
    docs = _rendered(overlay)
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    ray_docs = [d for d in docs if d["kind"] == "RayCluster"] + _rayjobs()
    pods = 0
    for doc in ray_docs:
        for node_type, group, tpl in _ray_pods(doc):
            labels = _pod_labels(doc, node_type, tpl)
            selecting = [
                m for m in monitors if m["spec"]["selector"]["matchLabels"].items() <= labels.items()
            ]
            assert len(selecting) == 1, (
                doc["metadata"]["name"],
                node_type,
                [m["metadata"]["name"] for m in selecting],
            )
            ports = {p["name"]: p["containerPort"] for p in tpl["spec"]["containers"][0].get("ports") or []}
            for endpoint in selecting[0]["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in ports, (doc["metadata"]["name"], node_type, endpoint["port"])
            assert ports["metrics"] == int(group["rayStartParams"]["metrics-export-port"])
            pods += 1
    assert pods == 3 + 2 * len(GPU_STAGES | CPU_STAGES)
    for m in monitors:
        jsonschema.validate(m, POD_MONITOR_SCHEMA)
        assert "release" in m["metadata"]["labels"], "kube-prometheus-stack selects PodMonitors by release"
        assert m["metadata"]["namespace"] == docs[0]["metadata"]["name"]  # no namespaceSelector: its own
        assert m["spec"]["selector"]["matchLabels"]["ray.io/node-type"] in ("head", "worker")
        for endpoint in m["spec"]["podMetricsEndpoints"]:
            assert {
                "action": "replace",
                "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
                "targetLabel": "ray_io_cluster",
            } in endpoint["relabelings"]
    head = next(m for m in monitors if m["spec"]["selector"]["matchLabels"]["ray.io/node-type"] == "head")
    assert {e["port"] for e in head["spec"]["podMetricsEndpoints"]} == {
        "metrics",
        "as-metrics",
        "dash-metrics",
    }


def test_ray_heads_read_the_grafana_wiring() -> None:
    for _, doc in _ray_docs():
        head = _cluster_spec(doc)["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert {"configMapRef": {"name": "mvlp-ray-monitoring", "optional": True}} in head["envFrom"]


def test_import_dashboards_script_parses() -> None:
    script = K8S / "monitoring" / "import-ray-dashboards.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "grafana_dashboard=1" in script.read_text() and "--server-side" in script.read_text()


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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prefect_server_serves_the_worker(overlay: str) -> None:
    """The worker's PREFECT_API_URL is the in-namespace Prefect server; the server keeps its SQLite
    database on its own ReadWriteOnce volume (one replica, Recreate), runs the project's Prefect (the
    cpu image) and writes nothing into the read-only image; the worker creates its pool from the
    project's base job template."""
    docs = _rendered(overlay)
    by_key = {_key(d): d for d in docs}
    server = by_key[("Deployment", "prefect-server")]
    service = by_key[("Service", "prefect-server")]
    (port,) = service["spec"]["ports"]
    assert _configmap(docs, "prefect-api")["PREFECT_API_URL"] == f"http://prefect-server:{port['port']}/api"
    pod = server["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert server["spec"]["replicas"] == 1 and server["spec"]["strategy"]["type"] == "Recreate"
    (c,) = pod["spec"]["containers"]
    assert c["image"].endswith("-cpu") and c["command"][:3] == ["prefect", "server", "start"]
    assert {"name": "http", "containerPort": port["port"]} in c["ports"]
    env = {e["name"]: e for e in c["env"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claim = volumes[mounts[env["PREFECT_HOME"]["value"]]]["persistentVolumeClaim"]["claimName"]
    assert by_key[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert env["PREFECT_SERVER_UI_STATIC_DIRECTORY"]["value"].startswith(
        ("/tmp/", env["PREFECT_HOME"]["value"])
    )
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/health"
    worker = by_key[("Deployment", "prefect-worker")]["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(worker["command"])
    assert "prefect work-pool create mvlp-k8s --type kubernetes --overwrite" in command
    template = re.search(r"--base-job-template (\S+)", command)[1]
    assert template == "/app/" + str(WORK_POOL.relative_to(ROOT))  # the Dockerfile copies infra/ to /app


def _fill(node: Any, values: dict[str, Any]) -> Any:
    """The job manifest with the pool's `{{ var }}` placeholders replaced, as a worker does."""
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str):
        whole = re.fullmatch(r"\{\{ (\w+) \}\}", node)
        if whole:
            return values[whole[1]]
        return re.sub(r"\{\{ (\w+) \}\}", lambda m: str(values[m[1]]), node)
    return node


def _quantity(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", q).groups()
    return float(number) * units[unit]


def test_work_pool_job_is_a_valid_job_with_room_for_the_in_process_stages() -> None:
    """The Kubernetes work pool's base job template: filled with its defaults it is a valid
    batch/v1 Job (strict) whose pod has the shared volume, the optional secrets and resources from
    the cpu_request/cpu_limit/memory_request/memory_limit variables, by default well above the old
    2 CPU / 4 GiB (ingest, align, shard and text-shard run in this pod)."""
    template = json.loads(WORK_POOL.read_text(encoding="utf-8"))
    props = template["variables"]["properties"]
    defaults = {k: v.get("default") for k, v in props.items()}
    for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        assert props[name]["type"] == "string" and props[name]["description"], name
    assert _quantity(defaults["cpu_request"]) > 2 and _quantity(defaults["memory_limit"]) > 4 * 2**30
    assert _quantity(defaults["cpu_request"]) <= _quantity(defaults["cpu_limit"])
    assert _quantity(defaults["memory_request"]) <= _quantity(defaults["memory_limit"])
    values = {**defaults, "name": "mvlp-run", "command": ["prefect", "flow-run", "execute"]}
    job = _fill(template["job_configuration"]["job_manifest"], values)
    pod = job["spec"]["template"]["spec"]
    # prefect-kubernetes refuses a template without these two in the pod spec (its own default
    # template has them there); the API server drops them as unknown fields
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x"
    validate(job)
    (c,) = pod["containers"]
    assert c["resources"] == {
        "requests": {"cpu": defaults["cpu_request"], "memory": defaults["memory_request"]},
        "limits": {"cpu": defaults["cpu_limit"], "memory": defaults["memory_limit"]},
    }
    storage = _configmap(render(K8S / "base"), "mvlp-storage")
    _check_secrets_and_cache(c, pod, storage, "work pool")
    assert pod["serviceAccountName"] == "mvlp-runner"
