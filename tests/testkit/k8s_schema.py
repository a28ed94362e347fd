"""Validate manifests: built-in kinds with kubernetes-validate (strict), KubeRay objects with
the CRDs' openAPIV3Schema (made strict: unknown fields are errors, since the API server would
silently prune them), and every embedded pod template as a core v1 PodTemplate."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.30.0"
ROOT = Path(__file__).resolve().parents[2]
# ../shared/data beside the checkout (CI); a worktree's checkout sits one level deeper.
CRD_DIR = next(
    (
        p / "data" / "k8s" / "crds"
        for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared")
        if p.exists()
    ),
    ROOT.parent / "shared" / "data" / "k8s" / "crds",
)
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(kind: str, version: str = "v1") -> jsonschema.Draft7Validator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large: libyaml is 10x faster
    crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(encoding="utf-8"), Loader=loader)
    (ver,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(_strict(ver["schema"]["openAPIV3Schema"]))


def pod_templates(node: Any) -> list[dict[str, Any]]:
    """Every `{metadata?, spec: {containers: ...}}` pod template nested in a document."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("spec"), dict) and "containers" in node["spec"]:
            found.append(node)
        for v in node.values():
            found += pod_templates(v)
    elif isinstance(node, list):
        for v in node:
            found += pod_templates(v)
    return found


def validate(doc: dict[str, Any]) -> None:
    """Raise on the first schema error of `doc` (jsonschema or kubernetes-validate error)."""
    if doc["apiVersion"].startswith("ray.io/"):
        errors = sorted(crd_validator(doc["kind"], doc["apiVersion"].split("/")[1]).iter_errors(doc), key=str)
        if errors:
            raise AssertionError(
                f"{doc['kind']}/{doc['metadata']['name']}: "
                + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
            )
        for tpl in pod_templates(doc.get("spec", {})):
            wrapped = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "embedded"},
                "template": tpl,
            }
            kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
