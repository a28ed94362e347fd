"""Loading a spec: safe YAML, `--set` overrides, `{workdir}` expansion, dataset references,
readable errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mvlp_core import storage
from mvlp_core.spec import yaml_reader
from mvlp_core.spec.base import SPECS_ROOT, SpecError
from mvlp_core.spec.data import DatasetSpec
from mvlp_core.spec.models import FAMILY_TAGS
from mvlp_core.spec.pipeline import PipelineSpec

# Spec keys that moved: old dotted path -> what replaces it. A spec still using one fails at load
# with one line naming the replacement (never silently ignored).
REPLACED = {
    "translate.engine": "execution.engines.translate (local | ray)",
    "iglue.engine": "execution.engines.iglue-eval (local | ray)",
    "pretrain.submit": "execution.ray_address (the Ray cluster the ray engine drives; None: RAY_ADDRESS or local)",
    "pretrain.ray_address": "execution.ray_address",
    "cluster.mode": "execution.submit (local -> here, ray_address -> ray-jobs, rayjob -> rayjob)",
    "cluster.address": "execution.jobs_address",
    "cluster.namespace": "execution.rayjob.namespace",
    "cluster.image": "execution.rayjob.image",
    "cluster.cpu_image": "execution.rayjob.cpu_image",
    "cluster.template": "execution.rayjob.template",
    "cluster.dashboard_url": "execution.rayjob.dashboard_url",
    "cluster.working_dir": "execution.working_dir",
    "cluster.poll_seconds": "execution.poll_seconds",
    "cluster.timeout_seconds": "execution.timeout_seconds",
    "cluster.gpu_slots": "execution.gpu_slots",
    "cluster": "execution (where each stage runs)",
    "translate.http.url": "translate.http.base_url",
    "translate.http.retries": "translate.http.max_retries",
    "translate.http.backoff": "translate.http.backoff_base",
    "model.tiny": "model.size (micro | tiny | small | base) with model.dims for single dimensions",
}


def check_replaced(raw: dict[str, Any], source: str) -> None:
    """SpecError naming the replacement of the first moved key `raw` still uses."""
    for old, new in REPLACED.items():
        node: Any = raw
        for part in old.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            raise SpecError(f"invalid spec {source}: {old} was replaced by {new}")


def _shown(value: Any, limit: int = 80) -> str:
    """A value as an error message shows it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path(loc: tuple[Any, ...]) -> str:
    """A field's dotted path as the spec writes it: the family tag pydantic puts after a model
    section (which member of the union failed) is not part of it."""
    parts: list[str] = []
    for p in loc:
        if not (parts and parts[-1] == "model" and p in FAMILY_TAGS):
            parts.append(str(p))
    return ".".join(parts)


def _format_error(source: str, err: ValidationError) -> str:
    """One line: the spec, then each failing field with what is wrong and the value it got."""
    problems = []
    for e in err.errors():
        loc = _path(e["loc"])
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        problems.append(f"{loc}: {msg} (got {_shown(e.get('input'))})")
    return f"invalid spec {source}: " + "; ".join(problems)


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SpecError(f"--set {dotted}: {p} is not a mapping")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SpecError(f"--set {text!r}: expected a.b=value")
    path, value = text.split("=", 1)
    return path.strip(), yaml_reader.override_value(value, path.strip())


def read_yaml(path: Path) -> Any:
    """A spec file's data (yaml_reader: safe tags, no duplicate keys, bounded aliases and size)."""
    return yaml_reader.read(path)


def load_dataset(ref: str) -> DatasetSpec:
    path = Path(ref) if ref.endswith((".yaml", ".yml")) else SPECS_ROOT / "datasets" / f"{ref}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (SPECS_ROOT / "datasets").glob("*.yaml"))
        raise SpecError(f"dataset.ref: unknown dataset {ref!r}; allowed: {', '.join(known)}")
    raw = read_yaml(path)
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_error(str(path), err)) from None


def _expand(value: Any, workdir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{workdir}", workdir)
    if isinstance(value, dict):
        return {k: _expand(v, workdir) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, workdir) for v in value]
    return value


def load_spec(path: str | Path, overrides: list[str] = (), workdir: str | Path | None = None) -> PipelineSpec:
    """Load and validate a pipeline spec: workdir made absolute, `{workdir}` expanded in every
    string, the dataset reference resolved into `dataset.spec`."""
    path = Path(path)
    if not path.exists():
        candidate = SPECS_ROOT / "pipelines" / f"{path.stem}.yaml"
        if not candidate.exists():
            raise SpecError(f"spec file {path} not found (built-in specs: data_specs/pipelines/)")
        path = candidate
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"invalid spec {path}: expected a YAML mapping at the top level")
    for item in overrides:
        set_path(raw, *parse_override(item))
    check_replaced(raw, str(path))
    for given, where in ((workdir, "--workdir"), (raw.get("workdir"), f"invalid spec {path}: workdir")):
        problem = storage.workdir_problem(given) if isinstance(given, str | Path) else None
        if problem:
            raise SpecError(f"{where}: {problem}")
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_error(str(path), err)) from None
    wd = Path(workdir) if workdir else Path(spec.workdir.replace("{name}", spec.name))
    wd = wd.resolve()
    if spec.dataset.spec is None:
        if spec.dataset.ref is None:
            raise SpecError(f"invalid spec {path}: dataset: give either ref or spec")
        spec.dataset.spec = load_dataset(spec.dataset.ref)
    raw = spec.model_dump(by_alias=True)
    raw["workdir"] = str(wd)
    spec = PipelineSpec.model_validate(_expand(raw, str(wd)))
    if spec.translate.backend == "import" and spec.translate.import_ is None:
        raise SpecError(f"invalid spec {path}: translate.import: required when backend is 'import'")
    for backend in ("ctranslate2", "http"):
        if spec.translate.backend == backend and getattr(spec.translate, backend) is None:
            raise SpecError(f"invalid spec {path}: translate.{backend}: required when backend is '{backend}'")
    if spec.qa.backend != "rules" and getattr(spec.qa, spec.qa.backend) is None:
        raise SpecError(
            f"invalid spec {path}: qa.{spec.qa.backend}: required when backend is "
            f"'{spec.qa.backend}' (at least model{', base_url' if spec.qa.backend == 'http' else ''})"
        )
    return spec
