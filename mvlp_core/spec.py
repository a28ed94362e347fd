"""Pipeline specs: pydantic models, YAML loading, `--set` overrides and readable errors.

A spec is data (safe-loaded YAML). Fields that only change speed, not output (process counts,
mirrors), are marked `fingerprint=False` so changing them does not recompute a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mvlp_core.languages import SUPPORTED_LANGUAGES

SPECS_ROOT = Path(__file__).resolve().parent.parent / "data_specs"
# text-shard (branch wip/textshard) goes between shard and pretrain when it lands.
STAGES = ("ingest", "download", "translate", "align", "qa", "shard", "pretrain")


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


class MixSpec(Strict):
    """UniGen's data recipe: each image record trains one task, text pairs are interleaved.

    An image record with QA pairs trains [qus] with weight `qus`, else [cap]; of the caption
    samples a `multilingual_fraction` share (UniGen: 10% of CC6L) picks a random non-English
    caption and trains [trans] with that caption as the contrastive text. `text_pairs` is the
    share of examples drawn from the parallel text shards (WikiMatrix [trans]), when present.
    """

    cap: float = Field(1.0, ge=0)
    qus: float = Field(0.5, ge=0)
    multilingual_fraction: float = Field(0.1, ge=0, le=1)
    languages: list[str] | None = Field(None, description="CC6L languages to draw from; None = spec languages")
    text_pairs: float = Field(0.2, ge=0, lt=1)
    min_pair_score: float | None = Field(None, description="drop text pairs scored below this")


class LoaderSpec(Strict):
    shuffle_buffer: int = Field(256, ge=1)
    num_workers: int = perf_only(0, ge=0, description="DataLoader processes per Ray Train worker")


class PretrainSpec(Strict):
    """Ray Train pretraining (UniGen's settings by default; all overridable)."""

    workers: int = perf_only(2, ge=1, description="Ray Train workers (data-parallel ranks)")
    use_gpu: bool = perf_only(False)
    gpus_per_worker: float = perf_only(1.0, gt=0)
    cpus_per_worker: float = perf_only(1.0, gt=0)
    batch_size: int = Field(32, gt=0, description="per worker, per micro-step")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(2000, ge=0)
    max_steps: int = Field(10000, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)
    bf16: bool = Field(True, description="bf16 autocast on GPU (ignored on CPU)")
    checkpoint_every: int = perf_only(500, gt=0)
    keep_checkpoints: int = perf_only(2, ge=1)
    max_failures: int = perf_only(3, ge=0)
    log_every: int = perf_only(10, gt=0)
    storage_path: str = perf_only("{workdir}/pretrain/ray", description="Ray Train storage: path or fsspec URL")
    run_name: str = perf_only("pretrain", pattern=r"^[a-zA-Z0-9_.-]+$")
    seed: int = 0
    mix: MixSpec = MixSpec()
    loader: LoaderSpec = LoaderSpec()
    submit: Literal["local", "ray_address", "rayjob"] = perf_only(
        "local", description="local Ray (started on demand; RAY_ADDRESS honoured), a given address, or a KubeRay RayJob"
    )
    ray_address: str | None = perf_only(None, description="ray://host:10001 or auto; None = RAY_ADDRESS or local")
    fail_at_step: int | None = perf_only(
        None, description="test knob: rank 1 exits hard once at this step (fault injection)"
    )
class TinyModelSpec(Strict):
    """Dimensions of the `tiny` model: random weights, small enough to learn the synthetic world on
    2 CPU cores (~2-3M parameters with the defaults)."""

    hidden_size: int = Field(128, gt=0, description="width of every tower (ViT, Q-Former, XLM-R, GPT-2)")
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(512, gt=0)
    patch_size: int = Field(8, gt=0)
    vision_layers: int = Field(2, gt=0)
    qformer_layers: int = Field(2, gt=0)
    text_layers: int = Field(2, gt=0)
    decoder_layers: int = Field(2, gt=0)
    encoder_vocab_size: int = Field(1000, ge=64, description="SentencePiece unigram size (a cap)")
    decoder_vocab_size: int = Field(1000, ge=300, description="byte-level BPE size (256 bytes + merges)")
    embed_dim: int = Field(64, gt=0, description="contrastive space width")
    max_positions: int = Field(256, gt=0, description="position embeddings of XLM-R and GPT-2")


class ModelSpec(Strict):
    """UniGen: BLIP-2 ViT + Q-Former, XLM-R encoder, GPT-2 decoder (see mvlp_core/model)."""

    size: Literal["tiny", "base"] = "tiny"
    checkpoint: str | None = Field(None, description="folder written by UniGen.save_pretrained")
    vision: str = Field(
        "Salesforce/blip2-opt-2.7b",
        description="base: BLIP-2 checkpoint name or path holding the ViT + Q-Former",
    )
    text_encoder: str = Field("xlm-roberta-base", description="base: XLM-R name or path")
    decoder: str = Field("gpt2", description="base: GPT-2 name or path")
    num_query_tokens: int = Field(32, gt=0)
    image_size: int | None = Field(None, gt=0, description="default: 224 for base, 64 for tiny")
    max_text_len: int = Field(64, ge=4, description="encoder tokens (source, caption)")
    max_target_len: int = Field(32, ge=2, description="decoder target tokens, eos included")
    freeze: list[Literal["vision", "qformer", "text_encoder", "decoder", "decoder.middle"]] | None = (
        Field(
            None,
            description="frozen parts; default: the paper's ['vision', 'decoder.middle'] for base,"
            " ['decoder.middle'] for tiny (its ViT is random, so it has to learn)",
        )
    )
    decoder_middle_layers: int | None = Field(
        None, ge=0, description="decoder.middle size; default: 6 for base (paper), a third for tiny"
    )
    alpha_qus: float = Field(1.0, ge=0, description="weight of L_qus")
    beta_match: float = Field(1.0, ge=0, description="weight of L_match")
    embed_dim: int = Field(256, gt=0, description="base: contrastive space width")
    temperature: float = Field(0.07, gt=0, description="initial InfoNCE temperature (learnable)")
    temperature_range: tuple[float, float] = (0.001, 0.5)
    hard_negatives: bool = Field(True, description="[match] negatives mined from similarities")
    tiny: TinyModelSpec = TinyModelSpec()

    @model_validator(mode="after")
    def _size_defaults(self) -> ModelSpec:
        if self.image_size is None:
            self.image_size = 224 if self.size == "base" else 64
        if self.freeze is None:
            self.freeze = ["vision", "decoder.middle"] if self.size == "base" else ["decoder.middle"]
        if self.size == "tiny" and self.image_size % self.tiny.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of tiny.patch_size {self.tiny.patch_size}"
            )
        if self.tiny.hidden_size % self.tiny.num_heads:
            raise ValueError("tiny.hidden_size must be a multiple of tiny.num_heads")
        return self


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
    pretrain: PretrainSpec = PretrainSpec()
    model: ModelSpec = ModelSpec()

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
