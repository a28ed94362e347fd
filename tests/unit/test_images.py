"""The runtime image family (Dockerfile) against what the cluster runs (infra/k8s): one Python minor
in every variant, Ray pinned to the manifests' rayVersion, vLLM in the cuda variant only, and only
the two variants in the manifests. Read from the files: no image is built here (`docker build`
with --build-arg VARIANT=cpu|cuda is the check that needs a registry and a daemon)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from testkit.k8s_schema import pod_templates
from testkit.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
VARIANTS = ("cpu", "cuda")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for every Dockerfile instruction, continuation lines joined."""
    out, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued RUN
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _global_args() -> dict[str, str]:
    args = {}
    for word, rest in _instructions():
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def _stages() -> dict[str, dict[str, Any]]:
    """Stage name -> {"from": base, "env": {...}, "run": [...]}, in file order."""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for word, rest in _instructions():
        if word == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"every FROM names its stage: FROM {rest}"
            current = stages[m[2]] = {"from": m[1], "env": {}, "run": []}
        elif current is not None and word == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
                current["env"][name] = value.strip('"')
        elif current is not None and word == "RUN":
            current["run"].append(rest)
    return stages


def _expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], text)


def _variant_chain(variant: str) -> list[str]:
    """The stages from `base-<variant>` down to the one built FROM an external image."""
    stages, chain, name = _stages(), [], f"base-{variant}"
    while name in stages:
        chain.append(name)
        name = stages[name]["from"]
    chain.append(name)  # the external image
    return chain


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _pin(req: str) -> str:
    (spec,) = Requirement(req).specifier
    assert spec.operator == "==", f"{req}: pin an exact version"
    return spec.version


def _ray_requirement() -> Requirement:
    (ray,) = [Requirement(d) for d in _project()["dependencies"] if Requirement(d).name == "ray"]
    return ray


def _yaml_values(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [
            x for v in node.values() for x in _yaml_values(v, key)
        ]
    if isinstance(node, list):
        return [x for v in node for x in _yaml_values(v, key)]
    return []


def _infra_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "infra").rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def test_every_variant_runs_the_same_python() -> None:
    """Ray refuses nodes whose Python differs from the head's: the cpu variant (heads, CPU workers)
    and the cuda variant (GPU workers) start from one python:X.Y image, and nothing installs
    another interpreter."""
    args, stages = _global_args(), _stages()
    assert args.get("VARIANT") in VARIANTS and "os" in stages
    assert stages["os"]["from"] == "base-${VARIANT}", "the variant is chosen by one build arg"
    roots = {v: _expand(_variant_chain(v)[-1], args) for v in VARIANTS}
    assert len(set(roots.values())) == 1, f"variants start from different images: {roots}"
    m = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-[\w.-]+", roots["cpu"])
    assert m, f"the variants' root is not an official python:X.Y image: {roots['cpu']}"
    minor = Version(f"{m[1]}.{m[2]}")
    requires = Requirement(f"x{_project()['requires-python']}").specifier
    assert requires.contains(minor), f"Python {minor} is outside requires-python {requires}"
    for name, stage in stages.items():
        for run in stage["run"]:
            for other in (r"python3\.\d+", "deadsnakes", r"uv python install", "conda ", "pyenv"):
                assert not re.search(other, run), f"stage {name} installs another Python: {run[:120]}"


def test_ray_is_pinned_to_the_manifests_ray_version() -> None:
    """pyproject's ray pin (what the image installs) == every rayVersion in infra/ == the ray this
    venv runs; the vllm extra's ray[llm] is the same release; the Dockerfile pins no Ray of its own."""
    ray = _ray_requirement()
    version = _pin(str(ray))
    assert {"default", "train", "data"} <= ray.extras
    (llm,) = [Requirement(d) for d in _project()["optional-dependencies"]["vllm"]]
    assert llm.name == "ray" and "llm" in llm.extras and _pin(str(llm)) == version
    versions = [v for d in _infra_docs() for v in _yaml_values(d, "rayVersion")]
    assert len(versions) >= 6, "the RayCluster and the five RayJob templates declare rayVersion"
    assert set(versions) == {version}, f"rayVersion {sorted(set(versions))} != pyproject's ray=={version}"
    assert importlib.metadata.version("ray") == version, "the dev venv runs another Ray: pip install -e ."
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert not re.search(r"\bray(\[[^\]]*\])?\s*==", dockerfile), "Ray's version lives in pyproject.toml only"


def test_vllm_only_in_the_cuda_variant() -> None:
    """qa's vllm backend needs vLLM (ray[llm]) on the GPU workers: the cuda variant installs the
    vllm extra with PyPI's CUDA torch, and leaves Prefect out (vLLM pins a fastapi below Prefect's;
    Ray pods never import Prefect). The cpu variant is the Prefect side: the k8s extra, the CPU torch."""
    stages = _stages()
    env = {v: stages[f"base-{v}"]["env"] for v in VARIANTS}
    extras = {v: env[v]["MVLP_EXTRAS"].split() for v in VARIANTS}
    assert "vllm" in extras["cuda"] and "vllm" not in extras["cpu"]
    assert "k8s" in extras["cpu"]
    assert set(extras["cpu"] + extras["cuda"]) <= set(_project()["optional-dependencies"])
    assert env["cuda"]["MVLP_WITHOUT"].split() == ["prefect"] and not env["cpu"]["MVLP_WITHOUT"].split()
    assert env["cpu"]["TORCH_INDEX"].endswith("/whl/cpu")
    assert env["cuda"]["TORCH_INDEX"] == "https://pypi.org/simple"  # the CUDA build of the pinned torch
    assert "NVIDIA_DRIVER_CAPABILITIES" in env["cuda"]
    deps = " ".join(r for s in stages.values() for r in s["run"])
    assert "MVLP_EXTRAS" in deps and "MVLP_WITHOUT" in deps and "optional-dependencies" in deps


def test_os_layer_has_what_kuberay_runs_in_ray_pods() -> None:
    """KubeRay's default probes exec `wget` (operators before the HTTP probes) and start Ray
    through bash; every variant gets them from the shared OS layer."""
    root_stage = _variant_chain("cpu")[-2]
    assert root_stage == _variant_chain("cuda")[-2], "both variants share the OS layer"
    (apt,) = [r for r in _stages()[root_stage]["run"] if "apt-get install" in r]
    assert re.search(r"\bwget\b", apt)


def _rendered() -> list[dict[str, Any]]:
    return [d for o in ("dev", "prod") for d in render(K8S / "overlays" / o)] + render(
        K8S / "base" / "rayjobs"
    )


def _ray_pods(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(role, pod template) of a RayCluster or RayJob: head, group name, or submitter."""
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    out = [("head", spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    if "submitterPodTemplate" in doc["spec"]:
        out.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return out


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlays_pin_both_variants_from_one_repository(overlay: str) -> None:
    kust = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    images = {i["name"]: i for i in kust["images"]}
    assert set(images) == {"mvlp-cpu", "mvlp-cuda"}
    assert images["mvlp-cpu"]["newName"] == images["mvlp-cuda"]["newName"]
    assert images["mvlp-cpu"]["newTag"].endswith("-cpu") and images["mvlp-cuda"]["newTag"].endswith("-cuda")


def test_manifests_run_only_the_two_variants_where_they_belong() -> None:
    """Every container runs the mvlp image: cuda on GPU groups (and the qa job's head, whose
    driver builds the vLLM processor), cpu everywhere else."""
    for doc in _rendered():
        for tpl in pod_templates(doc):
            for c in tpl["spec"]["containers"]:
                assert re.search(r"(^mvlp-|/mvlp:[\w.-]*-)(cpu|cuda)$", c["image"]), c["image"]
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        stage = doc["metadata"].get("labels", {}).get("mvlp.io/stage")
        for role, tpl in _ray_pods(doc):
            (c,) = tpl["spec"]["containers"]
            gpu = "nvidia.com/gpu" in c["resources"]["limits"]
            wants_cuda = gpu or (stage == "qa" and role == "head")
            assert c["image"].endswith("cuda") == wants_cuda, (doc["metadata"]["name"], role, c["image"])
