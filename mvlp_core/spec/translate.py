"""The translate stage's section: backends, quality filters, the Ray actor pool."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from mvlp_core.languages import SUPPORTED_LANGUAGES
from mvlp_core.spec.base import Strict, perf_only
from mvlp_core.spec.endpoint import EndpointSpec


def _models_field(example: str) -> Any:
    """A backend section's `models`: one language's model, where `model` does not suit it."""
    return Field(
        {},
        description="per-language model replacing `model` for that language (same placeholders), "
        f"e.g. {{zh: {example}}}",
    )


def _known_targets(models: dict[str, str]) -> dict[str, str]:
    """`models` keyed by target languages only: any other key is a typo that would go unused."""
    bad = sorted(k for k in models if k not in SUPPORTED_LANGUAGES or k == "en")
    if bad:
        raise ValueError(
            f"models: unknown target language(s) {bad}; keys are target language codes "
            f"({', '.join(c for c in SUPPORTED_LANGUAGES if c != 'en')})"
        )
    return models


class ImportSpec(Strict):
    path: str
    key_by: Literal["key", "text"] = "text"


class HFTranslateSpec(Strict):
    model: str = Field(
        "Helsinki-NLP/{opus}",
        description="checkpoint name or path; {lang} is replaced by the target language code, "
        "{opus} by its OPUS-MT model name (opus-mt-en-de)",
    )
    models: dict[str, str] = _models_field("Helsinki-NLP/opus-mt-en-zh")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="weights and compute dtype; auto: bfloat16 on a CUDA GPU that supports it, "
        "else float16 on a GPU, float32 on CPU (changes outputs slightly: fingerprinted as written)",
    )
    batch_tokens: int = perf_only(4096, gt=0, description="source tokens per generate() batch")
    num_beams: int = Field(1, gt=0)
    max_new_tokens: int = Field(128, gt=0)

    _models_known = field_validator("models")(_known_targets)


class CT2TranslateSpec(Strict):
    model: str = Field(
        description="CTranslate2 model folder (mvlp_core.stages.translate.ct2_backend.convert makes "
        "one from an HF checkpoint); {lang}/{opus} as in translate.hf.model"
    )
    models: dict[str, str] = _models_field("/models/ct2/opus-mt-en-zh")
    tokenizer: str | None = Field(None, description="HF tokenizer name or path; default: the model folder")
    compute_type: Literal["auto", "int8", "int8_float16", "float16", "bfloat16", "float32"] = Field(
        "auto", description="auto: int8 on CPU, float16 on GPU"
    )
    beam_size: int = Field(1, gt=0)
    max_decoding_length: int = Field(128, gt=0)
    device: Literal["auto", "cpu", "cuda"] = perf_only("auto")
    batch_tokens: int = perf_only(4096, gt=0, description="translate_batch max_batch_size (tokens)")
    intra_threads: int = perf_only(0, ge=0, description="0: CTranslate2's default")

    _models_known = field_validator("models")(_known_targets)


class HTTPTranslateSpec(EndpointSpec):
    """An OpenAI-compatible chat endpoint (`protocol: openai`, `model` required) or a LibreTranslate
    server (`base_url` its root)."""

    protocol: Literal["openai", "libretranslate"]
    prompt: str = Field(
        "Translate the following English image caption into {language}. Reply with the translation only.",
        description="openai: system prompt; {language} is the target language's English name",
    )
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(256, gt=0)


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
    """The actor pool the stage runs on with `execution.engines.translate: ray`."""

    concurrency: int = perf_only(2, gt=0, description="actors in the pool")
    num_gpus: float = perf_only(0, ge=0, description="GPUs per actor (0: CPU actors)")
    num_cpus: float = perf_only(1, gt=0, description="CPUs per actor")
    batch_tokens: int = perf_only(
        8192, gt=0, description="approximate source tokens per actor call (map_batches batch)"
    )


class TranslateSpec(Strict):
    backend: Literal["import", "hf", "ctranslate2", "http"] = "import"
    sample_fraction: float = Field(1.0, gt=0, le=1)
    import_: ImportSpec | None = Field(None, alias="import")
    hf: HFTranslateSpec = HFTranslateSpec()
    ctranslate2: CT2TranslateSpec | None = None
    http: HTTPTranslateSpec | None = None
    filters: TranslateFilters = TranslateFilters()
    ray: TranslateRaySpec = TranslateRaySpec()
