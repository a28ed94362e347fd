"""The subset of kustomize that infra/k8s uses, so manifests render where kustomize is absent.

Supported: `resources` (files and kustomization folders), `namespace`, `labels` (pairs, with
includeTemplates; metadata only by default), `images` (any `containers`/`initContainers` list,
CRDs included, as kustomize does), `patches` (JSON 6902 lists with a kind/name target, or
strategic-merge documents: maps merged, named lists merged by `name`, other lists replaced).
Anything else in a kustomization raises, so a feature the renderer does not know cannot pass
silently. Where `kubectl` is installed the tests check this renderer against `kubectl kustomize`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}


def _load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _matches(doc: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    have = {"kind": doc["kind"], "name": doc["metadata"]["name"], "group": group, "version": version}
    return all(have[k] == v for k, v in target.items())


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "replace":
            node[key]  # must exist, as in RFC 6902
            node[key] = op["value"]
        elif op["op"] == "add":
            if isinstance(node, list):
                node.append(op["value"]) if key == "-" else node.insert(key, op["value"])
            else:
                node[key] = op["value"]
        elif op["op"] == "remove":
            del node[key]
        else:
            raise NotImplementedError(f"JSON patch op {op['op']!r}")


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(base[k], v) if k in base else v
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out = [dict(x) for x in base]
        for item in patch:
            idx = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if idx is None:
                out.append(item)
            else:
                out[idx] = _merge(out[idx], item)
        return out
    return patch


def _apply_patch(docs: list[dict[str, Any]], entry: dict[str, Any], root: Path) -> None:
    body = (
        yaml.safe_load((root / entry["path"]).read_text())
        if "path" in entry
        else yaml.safe_load(entry["patch"])
    )
    if isinstance(body, list):
        targets = [d for d in docs if _matches(d, entry["target"])]
        for d in targets:
            _json6902(d, body)
    else:
        target = entry.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
        targets = [d for d in docs if _matches(d, target)]
        for i, d in enumerate(docs):
            if d in targets:
                docs[i] = _merge(d, body)
    if not targets:
        raise ValueError(f"patch {entry} matches no resource")


def _split_image(image: str) -> tuple[str, str]:
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, ""
    return name, tag


def _set_images(node: Any, images: list[dict[str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    name, tag = _split_image(c.get("image", ""))
                    for img in images:
                        if img["name"] == name:
                            c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}".rstrip(":")
            _set_images(value, images)
    elif isinstance(node, list):
        for v in node:
            _set_images(v, images)


def render(folder: str | Path) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize FOLDER` would print (in file order, not kustomize's)."""
    root = Path(folder)
    kust = yaml.safe_load((root / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kust) - KNOWN_KEYS
    if unknown:
        raise NotImplementedError(
            f"{root}: kustomization keys {sorted(unknown)} not supported by the test renderer"
        )
    docs: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = root / res
        docs += render(path) if path.is_dir() else _load_docs(path)
    docs = copy.deepcopy(docs)
    for entry in kust.get("patches", []):
        _apply_patch(docs, entry, root)
    ns = kust.get("namespace")
    for d in docs:
        meta = d.setdefault("metadata", {})
        if ns and d["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = ns
        if ns and d["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for s in d.get("subjects", []):
                if s.get("kind") == "ServiceAccount":
                    s["namespace"] = ns
        for label in kust.get("labels", []):
            if label.get("includeSelectors"):
                raise NotImplementedError("labels.includeSelectors")
            meta.setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") and "template" in d.get("spec", {}):
                d["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(
                    label["pairs"]
                )
        _set_images(d, kust.get("images", []))
    return docs
