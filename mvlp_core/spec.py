"""Pipeline specs: pydantic models, YAML loading, `--set` overrides and readable errors.

A spec is data (safe-loaded YAML). Fields that only change speed, not output (process counts,
mirrors), are marked `fingerprint=False` so changing them does not recompute a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mvlp_core.languages import SUPPORTED_LANGUAGES

SPECS_ROOT = Path(__file__).resolve().parent.parent / "data_specs"
STAGES = ("ingest", "download", "translate", "align", "qa", "shard", "text-shard")


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




class TextCorpusSpec(Strict):
    """One text corpus: parallel (WikiMatrix TSV or Moses line-aligned files) or monolingual
    (one sentence per line). Each language (monolingual) or pair (parallel) is one stream, read
    from `path` with its placeholders filled in, or from `paths[stream]` where given."""

    name: str = Field(pattern=r"^[a-z0-9]+$", max_length=12, description="key prefix")
    kind: Literal["parallel", "monolingual"]
    format: Literal["wikimatrix", "moses", "lines"]
    path: str | None = Field(
        None,
        description="file (local or fsspec URL, .gz/.xz/.bz2 inferred); placeholders: {lang} for "
        "monolingual and moses (one file per side), {src} {tgt} {pair} for wikimatrix",
    )
    paths: dict[str, str] = Field({}, description="per-stream override of path: lang or src-tgt -> path")
    languages: list[str] = Field([], description="monolingual: one stream per language")
    pairs: list[str] = Field([], description="parallel: one stream per pair src-tgt, in column/file order")
    min_score: float | None = Field(None, description="wikimatrix only: margin-score threshold (1.04-1.06 in the LASER papers)")
    min_words: int = Field(1, ge=1, description="per side; ja/zh count characters")
    max_words: int | None = Field(None, gt=0)
    min_chars: int = Field(1, ge=1)
    max_chars: int | None = Field(None, gt=0)
    max_length_ratio: float | None = Field(None, ge=1, description="parallel: longer/shorter side in words")
    dedup: Literal["none", "exact", "normalised"] = "exact"
    limit: int | None = Field(None, gt=0, description="input lines read per stream")

    @model_validator(mode="after")
    def _consistent(self) -> TextCorpusSpec:
        allowed = {"parallel": ("wikimatrix", "moses"), "monolingual": ("lines",)}[self.kind]
        if self.format not in allowed:
            raise ValueError(f"format {self.format!r} does not fit kind {self.kind!r}; allowed: {', '.join(allowed)}")
        if self.kind == "monolingual":
            if not self.languages or self.pairs:
                raise ValueError("a monolingual corpus lists `languages` (not `pairs`)")
            streams = self.languages
        else:
            if not self.pairs or self.languages:
                raise ValueError("a parallel corpus lists `pairs` like en-de (not `languages`)")
            streams = self.pairs
        bad = [s for s in streams for code in s.split("-") if code not in SUPPORTED_LANGUAGES]
        bad += [s for s in self.pairs if len(s.split("-")) != 2 or len(set(s.split("-"))) != 2]
        if bad:
            raise ValueError(
                f"bad language or pair {sorted(set(bad))}; pairs are src-tgt of two different codes "
                f"from: {', '.join(SUPPORTED_LANGUAGES)}"
            )
        if len(set(streams)) != len(streams):
            raise ValueError(f"repeated streams in {streams}")
        if self.min_score is not None and self.format != "wikimatrix":
            raise ValueError("min_score applies only to format wikimatrix (the only one with scores)")
        if self.max_length_ratio is not None and self.kind != "parallel":
            raise ValueError("max_length_ratio applies only to parallel corpora")
        if self.max_words is not None and self.max_words < self.min_words:
            raise ValueError(f"max_words {self.max_words} < min_words {self.min_words}")
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(f"max_chars {self.max_chars} < min_chars {self.min_chars}")
        unknown = sorted(set(self.paths) - set(streams))
        if unknown:
            raise ValueError(f"paths has keys {unknown} that are not streams of this corpus ({streams})")
        missing = [s for s in streams if s not in self.paths and self.path is None]
        if missing:
            raise ValueError(f"no path for {missing}: give `path` (a template) or `paths`")
        marks = ("{lang}",) if self.kind == "monolingual" else ("{src}", "{tgt}", "{pair}")
        if self.format == "moses":
            lacking = [s for s in streams if "{lang}" not in self.paths.get(s, self.path)]
            if lacking:
                raise ValueError(f"moses paths need {{lang}} (the two sides are two files); {lacking} lack it")
        else:
            shared = [s for s in streams if s not in self.paths]
            if len(shared) > 1 and not any(m in self.path for m in marks):
                raise ValueError(f"path serves {len(shared)} streams, so it needs one of {', '.join(marks)}")
        return self


class TextSpec(Strict):
    """Text-only corpora for the text-shard stage; no corpora: the stage writes an empty manifest."""

    corpora: list[TextCorpusSpec] = []
    samples_per_shard: int = Field(10000, gt=0, description="input lines per unit; each tar holds at most this many")
    alpha: float = Field(0.3, ge=0, le=1, description="language sampling q_i ~ p_i^alpha (XLM-R, M3P: 0.3)")

    @field_validator("corpora")
    @classmethod
    def _unique_names(cls, corpora: list[TextCorpusSpec]) -> list[TextCorpusSpec]:
        names = [c.name for c in corpora]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"corpus names must be unique (they prefix keys); repeated: {dup}")
        return corpora


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
    text: TextSpec = TextSpec()

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
