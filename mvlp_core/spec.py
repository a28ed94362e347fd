"""Pipeline specs: pydantic models, YAML loading, `--set` overrides and readable errors.

A spec is data (safe-loaded YAML). Fields that only change speed, not output (process counts,
mirrors), are marked `fingerprint=False` so changing them does not recompute a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mvlp_core.languages import SUPPORTED_LANGUAGES

SPECS_ROOT = Path(__file__).resolve().parent.parent / "data_specs"
STAGES = ("ingest", "download", "translate", "align", "qa", "shard")


def perf_only(default: Any, **kw: Any) -> Any:
    """A field that changes speed but never output: excluded from stage fingerprints."""
    return Field(default, json_schema_extra={"fingerprint": False}, **kw)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatasetSpec(Strict):
    """An image–caption URL list (data_specs/datasets/NAME.yaml)."""

    name: str = Field(pattern=r"^[a-z0-9]+$", max_length=12)
    description: str = ""
    license: str = ""
    kind: Literal["url_list", "synthetic"] = "url_list"
    url_list: str
    format: Literal["tsv", "csv", "jsonl", "parquet"]
    header: bool = True
    columns: list[str] | None = None
    url_column: str = "url"
    caption_column: str = "caption"
    id_column: str | None = None
    url_prefix: str | None = None
    serve_locally: bool = False


class DatasetRef(Strict):
    ref: str | None = Field(None, description="name of data_specs/datasets/NAME.yaml or a path")
    spec: DatasetSpec | None = Field(None, description="inline dataset (filled from ref on load)")
    limit: int | None = Field(None, gt=0)
    samples: int = Field(240, gt=0, description="synthetic world only: number of images")
    seed: int = 0


class UrlPolicy(Strict):
    allow_loopback: bool = False
    allow_private: bool = False
    allow_link_local: bool = False


class IngestSpec(Strict):
    shard_size: int = Field(1000, gt=0)
    dedup: Literal["url", "url+caption", "none"] = "url"
    max_caption_chars: int = Field(1000, gt=0)
    url_policy: UrlPolicy = UrlPolicy()


class DownloadSpec(Strict):
    image_size: int = Field(224, gt=0)
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = (
        "center_crop"
    )
    encode_quality: int = Field(95, ge=1, le=100)
    min_image_size: int = Field(0, ge=0)
    max_aspect_ratio: float = Field(float("inf"), gt=0)
    timeout: float = Field(10, gt=0)
    retries: int = Field(1, ge=0)
    processes: int = perf_only(2, gt=0)
    threads: int = perf_only(16, gt=0)
    mirrors: dict[str, str] = perf_only(
        {}, description="URL prefix -> mirror prefix used at fetch time; records keep the original"
    )


class ImportSpec(Strict):
    path: str
    key_by: Literal["key", "text"] = "text"


class HFTranslateSpec(Strict):
    model: str = Field(
        "Helsinki-NLP/opus-mt-en-{lang}",
        description="checkpoint name or path; {lang} is replaced by the target language",
    )
    batch_size: int = Field(32, gt=0)
    num_beams: int = Field(1, gt=0)
    max_new_tokens: int = Field(128, gt=0)


class TranslateSpec(Strict):
    backend: Literal["import", "hf"] = "import"
    sample_fraction: float = Field(1.0, gt=0, le=1)
    import_: ImportSpec | None = Field(None, alias="import")
    hf: HFTranslateSpec = HFTranslateSpec()


class AlignSpec(Strict):
    model: Literal[1, 2, 3] = 3
    symmetrize: Literal["grow-diag-final-and"] = "grow-diag-final-and"
    gold: str | None = Field(None, description="gold alignments (jsonl) to report AER against")


class HFQASpec(Strict):
    model: str
    batch_size: int = Field(8, gt=0)
    max_new_tokens: int = Field(96, gt=0)


class QASpec(Strict):
    backend: Literal["rules", "hf"] = "rules"
    max_pairs: int = Field(3, gt=0)
    hf: HFQASpec | None = None


class ShardSpec(Strict):
    samples_per_shard: int = Field(1000, gt=0)


class ClusterSpec(Strict):
    """Where Ray-backed stages (those with a `ray_jobs.<stage>` entrypoint) run. Never changes
    outputs, so it is not part of any fingerprint.

    `local`: in-process on this machine. `ray_address`: submitted to a running Ray cluster
    through the Ray Jobs API at `address`. `rayjob`: a KubeRay RayJob created from `template`
    in `namespace` (the job gets its own RayCluster, deleted when it ends)."""

    mode: Literal["local", "ray_address", "rayjob"] = "local"
    address: str = Field("http://127.0.0.1:8265", description="Ray Jobs API / dashboard URL (ray_address)")
    namespace: str = Field("mvlp", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    image: str = Field("mvlp:0.1.0-cuda", description="GPU worker image (rayjob)")
    cpu_image: str = Field("mvlp:0.1.0-cpu", description="head and submitter image (rayjob)")
    template: str = Field(
        "infra/k8s/base/rayjobs/{stage}.yaml", description="RayJob template; relative to the project root"
    )
    dashboard_url: str | None = Field(
        None, description="Ray dashboard link shown in Prefect (rayjob; default: the RayJob's status.dashboardURL)"
    )
    working_dir: str | None = Field(None, description="ray_address: upload this folder as the job's code")
    poll_seconds: float = Field(5.0, gt=0)
    timeout_seconds: float = Field(7 * 86400, gt=0)
    gpu_slots: int = Field(1, gt=0, description="Ray-backed stages running at once (Prefect concurrency limit)")


CRON_FIELD = r"[0-9A-Za-z*/,?#LW-]+"


class PipelineSpec(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]+$")
    description: str = ""
    workdir: str = "runs/{name}"
    dataset: DatasetRef
    languages: list[str] = Field(min_length=1)
    ingest: IngestSpec = IngestSpec()
    download: DownloadSpec = DownloadSpec()
    translate: TranslateSpec = TranslateSpec()
    align: AlignSpec = AlignSpec()
    qa: QASpec = QASpec()
    shard: ShardSpec = ShardSpec()
    cluster: ClusterSpec = perf_only(ClusterSpec())
    schedule: str | None = perf_only(
        None,
        pattern=rf"^\s*{CRON_FIELD}(\s+{CRON_FIELD}){{4}}\s*$",
        description="cron (5 fields) for the deployments `mvlp deploy` registers; none: run on demand",
    )
    timezone: str = perf_only("UTC", description="time zone of `schedule`")

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, langs: list[str]) -> list[str]:
        bad = [code for code in langs if code not in SUPPORTED_LANGUAGES or code == "en"]
        if bad:
            raise ValueError(
                f"unsupported target language(s) {bad}; allowed: {', '.join(SUPPORTED_LANGUAGES)}"
                " (English is the source and is always present)"
            )
        return langs


class SpecError(ValueError):
    """A spec that cannot run; the message names the field, the value and what is allowed."""


def _format_error(source: str, err: ValidationError) -> str:
    lines = [f"invalid spec {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {loc}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


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
    return path.strip(), yaml.safe_load(value)


def load_dataset(ref: str) -> DatasetSpec:
    path = Path(ref) if ref.endswith((".yaml", ".yml")) else SPECS_ROOT / "datasets" / f"{ref}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (SPECS_ROOT / "datasets").glob("*.yaml"))
        raise SpecError(f"dataset.ref: unknown dataset {ref!r}; allowed: {', '.join(known)}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
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


def load_spec(
    path: str | Path, overrides: list[str] = (), workdir: str | Path | None = None
) -> PipelineSpec:
    """Load and validate a pipeline spec: workdir made absolute, `{workdir}` expanded in every
    string, the dataset reference resolved into `dataset.spec`."""
    path = Path(path)
    if not path.exists():
        candidate = SPECS_ROOT / "pipelines" / f"{path.stem}.yaml"
        if not candidate.exists():
            raise SpecError(f"spec file {path} not found (built-in specs: data_specs/pipelines/)")
        path = candidate
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise SpecError(f"invalid spec {path}: expected a YAML mapping at the top level")
    for item in overrides:
        set_path(raw, *parse_override(item))
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_error(str(path), err)) from None
    wd = Path(workdir) if workdir else Path(spec.workdir.replace("{name}", spec.name))
    wd = wd.resolve()
    if spec.dataset.spec is None:
        if spec.dataset.ref is None:
            raise SpecError(f"invalid spec {path}:\n  dataset: give either ref or spec")
        spec.dataset.spec = load_dataset(spec.dataset.ref)
    raw = spec.model_dump(by_alias=True)
    raw["workdir"] = str(wd)
    spec = PipelineSpec.model_validate(_expand(raw, str(wd)))
    if spec.translate.backend == "import" and spec.translate.import_ is None:
        raise SpecError(f"invalid spec {path}:\n  translate.import: required when backend is 'import'")
    if spec.qa.backend == "hf" and spec.qa.hf is None:
        raise SpecError(f"invalid spec {path}:\n  qa.hf: required when backend is 'hf' (model: name or path)")
    return spec


def fingerprint_config(model: BaseModel) -> dict[str, Any]:
    """The part of a spec section that determines output (perf-only fields dropped)."""
    out: dict[str, Any] = {}
    for name, f in type(model).model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("fingerprint") is False:
            continue
        value = getattr(model, name)
        out[name] = fingerprint_config(value) if isinstance(value, BaseModel) else value
    return out
