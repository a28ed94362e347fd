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
STAGES = (
    "ingest",
    "download",
    "translate",
    "align",
    "qa",
    "shard",
    "text-shard",
    "pretrain",
    "iglue-eval",
    "report",
)


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
    allowed_ports: list[int] | None = Field(
        None, description="ports that may be fetched (None: any); e.g. [80, 443] on a crawl"
    )


class IngestSpec(Strict):
    shard_size: int = Field(1000, gt=0)
    dedup: Literal["url", "url+caption", "none"] = "url"
    max_caption_chars: int = Field(1000, gt=0)
    url_policy: UrlPolicy = UrlPolicy()


class DownloadSpec(Strict):
    image_size: int = Field(224, gt=0)
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "center_crop"
    encode_quality: int = Field(95, ge=1, le=100)
    min_image_size: int = Field(0, ge=0)
    max_aspect_ratio: float = Field(float("inf"), gt=0)
    timeout: float = Field(10, gt=0)
    retries: int = Field(1, ge=0)
    guard_fetch: bool = Field(
        True,
        description="check each request img2dataset makes (every redirect hop, every resolved "
        "address) against the URL policy",
    )
    max_image_pixels: int = Field(
        100_000_000, gt=0, description="images declaring more pixels are refused before decoding"
    )
    max_response_bytes: int = Field(50 * 2**20, gt=0, description="larger responses are refused or cut")
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
        "Helsinki-NLP/{opus}",
        description="checkpoint name or path; {lang} is replaced by the target language code, "
        "{opus} by its OPUS-MT model name (opus-mt-en-de)",
    )
    batch_tokens: int = perf_only(4096, gt=0, description="source tokens per generate() batch")
    num_beams: int = Field(1, gt=0)
    max_new_tokens: int = Field(128, gt=0)


class CT2TranslateSpec(Strict):
    model: str = Field(
        description="CTranslate2 model folder (mvlp_core.stages.translate.ct2_backend.convert makes "
        "one from an HF checkpoint); {lang}/{opus} as in translate.hf.model"
    )
    tokenizer: str | None = Field(None, description="HF tokenizer name or path; default: the model folder")
    compute_type: Literal["auto", "int8", "int8_float16", "float16", "bfloat16", "float32"] = Field(
        "auto", description="auto: int8 on CPU, float16 on GPU"
    )
    beam_size: int = Field(1, gt=0)
    max_decoding_length: int = Field(128, gt=0)
    device: Literal["auto", "cpu", "cuda"] = perf_only("auto")
    batch_tokens: int = perf_only(4096, gt=0, description="translate_batch max_batch_size (tokens)")
    intra_threads: int = perf_only(0, ge=0, description="0: CTranslate2's default")


class HTTPTranslateSpec(Strict):
    protocol: Literal["openai", "libretranslate"]
    url: str = Field(description="base URL: .../v1 for openai, the server root for libretranslate")
    model: str | None = Field(None, description="openai: the model name the server serves")
    api_key_env: str | None = Field(
        None, description="name of the environment variable holding the API key (never the key)"
    )
    prompt: str = Field(
        "Translate the following English image caption into {language}. Reply with the translation only.",
        description="openai: system prompt; {language} is the target language's English name",
    )
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(256, gt=0)
    timeout: float = perf_only(30.0, gt=0, description="seconds per request")
    retries: int = perf_only(4, ge=0)
    backoff: float = perf_only(0.5, gt=0, description="first retry delay in seconds, doubled each try")
    requests_per_second: float | None = perf_only(None, gt=0)
    concurrency: int = perf_only(4, gt=0, description="requests in flight")


class LengthRatio(Strict):
    min: float = Field(gt=0)
    max: float = Field(gt=0)


class TranslateFilters(Strict):
    """Output checks; each failure is a reject with its own reason."""

    identical: bool = Field(True, description="reject output equal to the English source")
    length_ratio: dict[str, LengthRatio] = Field(
        {
            "default": LengthRatio(min=0.4, max=2.5),
            "han": LengthRatio(min=0.1, max=1.2),
            "japanese": LengthRatio(min=0.15, max=1.5),
            "hangul": LengthRatio(min=0.15, max=1.5),
        },
        description="output/source character ratio bounds by target script (languages.py); "
        "'default' for the others; an empty mapping disables the check",
    )
    ratio_min_source_chars: int = Field(12, ge=0, description="shorter sources skip the ratio check")
    script_share: float = Field(
        0.5, ge=0, le=1, description="least share of letters in the target's script; 0 disables"
    )
    max_repeats: int = Field(3, ge=0, description="most consecutive repeats of one 1-4-gram; 0 disables")


class TranslateRaySpec(Strict):
    concurrency: int = perf_only(2, gt=0, description="actors in the pool")
    num_gpus: float = perf_only(0, ge=0, description="GPUs per actor (0: CPU actors)")
    num_cpus: float = perf_only(1, gt=0, description="CPUs per actor")
    batch_tokens: int = perf_only(
        8192, gt=0, description="approximate source tokens per actor call (map_batches batch)"
    )


class TranslateSpec(Strict):
    backend: Literal["import", "hf", "ctranslate2", "http"] = "import"
    engine: Literal["local", "ray"] = perf_only(
        "local", description="local: in-process; ray: ray_jobs.translate (an actor pool)"
    )
    sample_fraction: float = Field(1.0, gt=0, le=1)
    import_: ImportSpec | None = Field(None, alias="import")
    hf: HFTranslateSpec = HFTranslateSpec()
    ctranslate2: CT2TranslateSpec | None = None
    http: HTTPTranslateSpec | None = None
    filters: TranslateFilters = TranslateFilters()
    ray: TranslateRaySpec = TranslateRaySpec()


class PriorCorpus(Strict):
    """A large en–xx parallel corpus (one sentence per line) to learn eflomal priors from."""

    src: str = Field(description="English side")
    tgt: str = Field(description="the other language's side, line-parallel")
    pretokenized: bool = Field(False, description="split on spaces instead of mvlp's tokenizers")
    limit: int | None = Field(None, gt=0, description="read at most this many lines")


class AlignSpec(Strict):
    model: Literal[1, 2, 3] = 3
    symmetrize: Literal["grow-diag-final-and"] = "grow-diag-final-and"
    gold: str | None = Field(None, description="gold alignments (jsonl) to report AER against")
    chunk_size: int = Field(
        100_000, gt=0, description="pairs per unit; a language is aligned in chunks of this size"
    )
    priors: str = Field(
        "learn",
        description="learn (from prior_corpus, else from the stage's own pairs when a language "
        "has several chunks) | none (every chunk blind) | path of an eflomal priors file, "
        "{lang} replaced by the language",
    )
    prior_pairs: int = Field(
        200_000, gt=0, description="at most this many pairs feed the first (prior-learning) pass"
    )
    prior_corpus: dict[str, PriorCorpus] = Field(
        {}, description="language -> parallel corpus to learn that language's priors from"
    )
    dictionary_min_count: int = Field(
        2, gt=0, description="bilingual dictionary: keep word pairs aligned at least this often"
    )
    dictionary_min_prob: float = Field(
        0.1, gt=0, le=1, description="bilingual dictionary: keep pairs with p(xx | en) >= this"
    )
    workers: int = perf_only(1, gt=0, description="processes aligning chunks in parallel")

    @field_validator("priors")
    @classmethod
    def _priors_mode(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("priors: give learn, none or the path of an eflomal priors file")
        return value


class HFQASpec(Strict):
    model: str
    batch_size: int = Field(8, gt=0)
    max_new_tokens: int = Field(96, gt=0)


class HTTPQASpec(Strict):
    """An OpenAI-compatible endpoint (a vLLM or llama.cpp server, a hosted API)."""

    base_url: str = perf_only(
        ...,
        description="ends in /v1, e.g. http://llm:8000/v1; where, not what: moving the "
        "server does not recompute the stage (model and sampling fields do)",
    )
    model: str
    mode: Literal["chat", "completion"] = Field(
        "chat", description="chat: /chat/completions with few-shot turns; completion: raw prompt"
    )
    api_key_env: str | None = perf_only(
        None, description="NAME of the environment variable that holds the API key (never the key)"
    )
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(128, gt=0)
    timeout: float = perf_only(60.0, gt=0)
    max_retries: int = perf_only(5, ge=0)
    backoff_base: float = perf_only(1.0, ge=0)
    backoff_max: float = perf_only(60.0, ge=0)
    requests_per_second: float | None = perf_only(None, gt=0)
    concurrency: int = perf_only(8, gt=0, description="requests in flight at once")


class VLLMQASpec(Strict):
    """vLLM engines run by ray.data.llm on GPU workers (`python -m ray_jobs.qa`)."""

    model: str = Field(description="checkpoint name or path, readable by every GPU worker")
    mode: Literal["chat", "completion"] = "chat"
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(128, gt=0)
    concurrency: int = perf_only(1, gt=0, description="vLLM engine replicas")
    gpus_per_replica: int = perf_only(1, gt=0, description="tensor-parallel size of a replica")
    batch_size: int = perf_only(64, gt=0)
    max_model_len: int = perf_only(4096, gt=0)
    engine_kwargs: dict[str, Any] = perf_only({}, description="extra vLLM engine arguments")


class QASpec(Strict):
    backend: Literal["rules", "hf", "http", "vllm"] = "rules"
    pairs_per_caption: int = Field(
        1, gt=0, description="QA pairs asked for and kept per caption (UniGen's CCQA3M: 1)"
    )
    max_output_chars: int = Field(
        1500, gt=0, description="longer model outputs are truncated and counted as overlong_output"
    )
    checkpoint_every: int = perf_only(
        256, gt=0, description="captions per saved batch inside a unit (resume granularity)"
    )
    hf: HFQASpec | None = None
    http: HTTPQASpec | None = None
    vllm: VLLMQASpec | None = None


class ShardSpec(Strict):
    samples_per_shard: int = Field(1000, gt=0)


IGLUE_TASKS = ("xvnli", "xgqa", "marvl", "xflickrco", "wit")


class IglueFinetuneTaskSpec(Strict):
    """One task's departures from the shared fine-tune settings (unset: the shared value)."""

    epochs: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)
    max_train_items: int | None = Field(None, gt=0)
    head_lr_scale: float | None = Field(None, gt=0)
    freeze: list[str] | None = None


class IglueFinetuneSpec(Strict):
    """The fine-tune each (task, setting) starts with (mvlp_core/eval/finetune.py). `tasks`
    overrides fields per task: retrieval fine-tunes the contrastive space, which a learning rate
    that suits the label-word heads wrecks in a few steps."""

    epochs: int = Field(3, ge=0, description="0: evaluate the pretrained model as is")
    batch_size: int = Field(16, gt=0)
    lr: float = Field(5e-5, gt=0, description="zero-shot (English) fine-tuning")
    max_steps: int | None = Field(None, gt=0)
    max_train_items: int | None = Field(None, gt=0, description="cap on English training items")
    head_lr_scale: float = Field(
        100.0,
        gt=0,
        description="learning-rate factor for the parts only fine-tuning trains (UniGen's "
        "multi-image gate and image positions, used by MaRVL alone): they start fresh while the body "
        "is pretrained; at 1 the world's NLVR2 fine-tunes to chance",
    )
    freeze: list[str] = Field(
        [],
        description="parameter name prefixes held fixed, e.g. [text_encoder.embeddings]: English-only "
        "fine-tuning otherwise moves the English tokens' embeddings away from the other languages'",
    )
    tasks: dict[Literal["xvnli", "xgqa", "marvl", "xflickrco", "wit"], IglueFinetuneTaskSpec] = Field(
        {}, description="task -> fields that differ from the shared ones, e.g. {wit: {lr: 3e-4}}"
    )

    def for_task(self, task: str) -> IglueFinetuneSpec:
        """The settings `task` fine-tunes with: the shared ones, its own where given."""
        own = self.tasks.get(task)
        changes = own.model_dump(exclude_none=True) if own is not None else {}
        return self.model_copy(update={**changes, "tasks": {}})


class IglueSpec(Strict):
    """IGLUE evaluation (stage iglue-eval): tasks x settings x languages over a root laid out like
    IGLUE's datasets/ folder, with one image root per folder kind."""

    root: str = Field("{workdir}/world/iglue", description="annotation root (IGLUE datasets/ layout)")
    image_roots: dict[Literal["flickr30k", "coco", "gqa", "marvl", "nlvr2", "wit"], str] = Field(
        {}, description="folder kind -> image folder; default: <root>/images/<kind> (coco: flickr30k's)"
    )
    tasks: list[Literal["xvnli", "xgqa", "marvl", "xflickrco", "wit"]] = list(IGLUE_TASKS)
    settings: list[Literal["zero-shot", "few-shot", "translate-test"]] = ["zero-shot"]
    languages: dict[str, list[str]] = Field(
        {}, description="task -> test languages besides English; default: IGLUE's"
    )
    few_shot: dict[str, str] = Field(
        {"xvnli": "48", "xgqa": "48", "marvl": "10", "xflickrco": "100"},
        description="task -> shots of the train_<shots> file used in the few-shot setting",
    )
    lr_grid: list[float] = Field([1e-4, 5e-5, 1e-5], min_length=1, description="few-shot learning rates")
    few_shot_epochs: int = Field(5, ge=1)
    finetune: IglueFinetuneSpec = IglueFinetuneSpec()
    rerank_k: int = Field(16, ge=0, description="retrieval: top-k re-ranked with the [match] score")
    answer_normalisation: Literal["vqa", "lower", "none"] = "vqa"
    max_test_items: int | None = Field(None, gt=0, description="cap per test file (smoke runs)")
    max_dev_items: int | None = Field(200, gt=0, description="cap on English dev items for selection")
    max_new_tokens: int = Field(8, gt=0, description="xGQA answer length")
    seed: int = 0
    batch_size: int = perf_only(16, gt=0)
    engine: Literal["local", "ray"] = perf_only(
        "local",
        description="local: units one after the other in-process; ray: each unit a Ray task (retried)",
    )
    workers: int = perf_only(1, ge=1, description="units evaluated in parallel (Ray tasks)")
    device: str = perf_only("cpu", description="torch device of each unit")


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
    languages: list[str] | None = Field(
        None, description="CC6L languages to draw from; None = spec languages"
    )
    text_pairs: float = Field(0.2, ge=0, lt=1)
    min_pair_score: float | None = Field(None, description="drop text pairs scored below this")
    code_switch: float = Field(
        0.0,
        ge=0,
        le=1,
        description="M3P code-switching: share of English encoder texts ([qus] questions, the "
        "contrastive/[match] caption) in which words are swapped for their aligned translations",
    )
    code_switch_ratio: float = Field(0.5, ge=0, le=1, description="share of a text's words swapped")


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
    storage_path: str = perf_only(
        "{workdir}/pretrain/ray", description="Ray Train storage: path or fsspec URL"
    )
    run_name: str = perf_only("pretrain", pattern=r"^[a-zA-Z0-9_.-]+$")
    seed: int = 0
    mix: MixSpec = MixSpec()
    loader: LoaderSpec = LoaderSpec()
    submit: Literal["local", "ray_address"] = perf_only(
        "local",
        description="where this process runs the trainer: local Ray (started on demand; RAY_ADDRESS "
        "honoured) or a given address; as a KubeRay RayJob: cluster.mode=rayjob (the flow submits it)",
    )
    ray_address: str | None = perf_only(
        None, description="ray://host:10001 or auto; None = RAY_ADDRESS or local"
    )
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
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="base: 'random' builds the published shapes with random weights and tokenizers"
        " trained on the shards, capped at tiny.encoder_vocab_size / tiny.decoder_vocab_size"
        " (throughput and MFU runs where no checkpoint is at hand); tiny is always random, and"
        " `checkpoint` overrides both",
    )
    num_query_tokens: int = Field(32, gt=0)
    image_size: int | None = Field(None, gt=0, description="default: 224 for base, 64 for tiny")
    max_text_len: int = Field(64, ge=4, description="encoder tokens (source, caption)")
    max_target_len: int = Field(32, ge=2, description="decoder target tokens, eos included")
    freeze: list[Literal["vision", "qformer", "text_encoder", "decoder", "decoder.middle"]] | None = Field(
        None,
        description="frozen parts; default: the paper's ['vision', 'decoder.middle'] for base,"
        " ['decoder.middle'] for tiny (its ViT is random, so it has to learn)",
    )
    decoder_middle_layers: int | None = Field(
        None, ge=0, description="decoder.middle size; default: 6 for base (paper), a third for tiny"
    )
    alpha_qus: float = Field(1.0, ge=0, description="weight of L_qus")
    beta_match: float = Field(1.0, ge=0, description="weight of L_match")
    gamma_itc: float = Field(
        1.0,
        ge=0,
        description="weight of the contrastive loss (UniGen: 1; a tiny random-init model "
        "needs more, or the generative losses swamp the shared towers' updates)",
    )
    delta_xlc: float = Field(
        0.0,
        ge=0,
        description="weight of the cross-lingual consistency loss (not in UniGen): a "
        "parallel pair's source side, read as a [qus] or [match] prompt over an image of the batch, "
        "must give the decoder's next-token distribution its English side gives",
    )
    epsilon_sent: float = Field(
        0.0,
        ge=0,
        description="weight of the sentence alignment loss (not in UniGen): a parallel "
        "pair's source side, its XLM-R states averaged, is pulled to its English side's average (MSE, "
        "English side held fixed), as multilingual sentence encoders are distilled",
    )
    max_images: int = Field(
        2, ge=1, description="images per example (MaRVL: 2), each with a position embedding"
    )
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
    min_score: float | None = Field(
        None, description="wikimatrix only: margin-score threshold (1.04-1.06 in the LASER papers)"
    )
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
            raise ValueError(
                f"format {self.format!r} does not fit kind {self.kind!r}; allowed: {', '.join(allowed)}"
            )
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
                raise ValueError(
                    f"moses paths need {{lang}} (the two sides are two files); {lacking} lack it"
                )
        else:
            shared = [s for s in streams if s not in self.paths]
            if len(shared) > 1 and not any(m in self.path for m in marks):
                raise ValueError(f"path serves {len(shared)} streams, so it needs one of {', '.join(marks)}")
        return self


class TextSpec(Strict):
    """Text-only corpora for the text-shard stage; no corpora: the stage writes an empty manifest."""

    corpora: list[TextCorpusSpec] = []
    samples_per_shard: int = Field(
        10000, gt=0, description="input lines per unit; each tar holds at most this many"
    )
    alpha: float = Field(0.3, ge=0, le=1, description="language sampling q_i ~ p_i^alpha (XLM-R, M3P: 0.3)")

    @field_validator("corpora")
    @classmethod
    def _unique_names(cls, corpora: list[TextCorpusSpec]) -> list[TextCorpusSpec]:
        names = [c.name for c in corpora]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"corpus names must be unique (they prefix keys); repeated: {dup}")
        return corpora


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
        None,
        description="Ray dashboard link shown in Prefect (rayjob; default: the RayJob's status.dashboardURL)",
    )
    working_dir: str | None = Field(None, description="ray_address: upload this folder as the job's code")
    poll_seconds: float = Field(5.0, gt=0)
    timeout_seconds: float = Field(7 * 86400, gt=0)
    gpu_slots: int = Field(
        1, gt=0, description="Ray-backed stages running at once (Prefect concurrency limit)"
    )


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
    iglue: IglueSpec = IglueSpec()
    pretrain: PretrainSpec = PretrainSpec()
    model: ModelSpec = ModelSpec()
    text: TextSpec = TextSpec()
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


def read_yaml(path: Path) -> Any:
    """Safe-load a YAML file: specs are data, so tags that build Python objects are refused."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError as err:
        raise SpecError(
            f"invalid spec {path}: not safe YAML ({err.problem}); specs are data, tags such as "
            "!!python/object are refused: write plain values"
        ) from None
    except yaml.YAMLError as err:
        raise SpecError(f"invalid spec {path}: not YAML ({' '.join(str(err).split())})") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"invalid spec {path}: not UTF-8 ({err.reason} at byte {err.start})") from None


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
    for backend in ("ctranslate2", "http"):
        if spec.translate.backend == backend and getattr(spec.translate, backend) is None:
            raise SpecError(
                f"invalid spec {path}:\n  translate.{backend}: required when backend is '{backend}'"
            )
    if spec.qa.backend != "rules" and getattr(spec.qa, spec.qa.backend) is None:
        raise SpecError(
            f"invalid spec {path}:\n  qa.{spec.qa.backend}: required when backend is "
            f"'{spec.qa.backend}' (at least model{', base_url' if spec.qa.backend == 'http' else ''})"
        )
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
