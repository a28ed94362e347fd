"""What the `hf` and `ctranslate2` backends share: loading a tokenizer, steering a checkpoint to the
target language, and grouping sentences into batches by token count.

Three kinds of checkpoint: OPUS-MT pair models (nothing to steer), OPUS-MT multi-target models
(a `>>xxx<<` token opens the source) and multilingual models (M2M-100, NLLB: English set as the
source language, the target's language token forced as the first output token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mvlp_core.contract import StageError
from mvlp_core.stages.translate.codes import codes, model_name, unsupported


@dataclass(frozen=True)
class Steering:
    source_prefix: str = ""  # prepended to every source sentence
    target_token: str | None = None  # forced first output token


def load_failure(field: str, lang: str, name: str, err: Exception) -> StageError:
    reason = (str(err).strip().splitlines() or [""])[0][:300]
    return StageError(
        f"{field}: cannot load the en->{lang} model {name!r} ({type(err).__name__}: {reason}). "
        "Give a local folder (for hf: config.json, weights and tokenizer files; for ctranslate2: "
        "a converted model with its tokenizer files); {lang} in the value is replaced by the "
        "target language and {opus} by its OPUS-MT model name, e.g. "
        f"--set {field}=/models/opus-mt-en-{{lang}}; loading by name needs the Hugging Face hub "
        "or a filled HF cache"
    )


def load_tokenizer(name: str, field: str, lang: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as err:  # any load failure is about the run, not a sample
        raise load_failure(field, lang, name, err) from err


def _has_token(tokenizer: Any, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def steering(tokenizer: Any, lang: str, name: str) -> Steering:
    """How to make `tokenizer`'s checkpoint write `lang`; sets its source language as a side effect.

    Raises a StageError naming the language, the model and the fix when it cannot.
    """
    row = codes(lang)
    if hasattr(tokenizer, "src_lang"):
        for src, tgt in (("en", row.m2m), ("eng_Latn", row.flores)):
            if _has_token(tokenizer, tgt):
                tokenizer.src_lang = src
                return Steering(target_token=tgt)
        raise unsupported(
            lang,
            name,
            f"a multilingual checkpoint without {row.m2m} or {row.flores}",
            f"Use a model that covers {lang} or a per-pair model such as Helsinki-NLP/{row.opus}",
        )
    if any(t.startswith(">>") and t.endswith("<<") for t in tokenizer.get_vocab()):
        token = row.opus_token or f">>{lang}<<"
        if _has_token(tokenizer, token):
            return Steering(source_prefix=f"{token} ")
        raise unsupported(
            lang,
            name,
            f"a multi-target OPUS-MT model without the {token} token",
            f"Use a model whose targets include {lang}, e.g. Helsinki-NLP/{row.opus}",
        )
    return Steering()


def token_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices grouped longest-first so each batch's padded size (rows x longest) fits `budget`.

    A sentence longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def translate_unique(
    generate: Callable[[list[str], str], list[str]], captions: list[str], lang: str
) -> list[str]:
    """Generate each distinct caption once (captions repeat in web data), in input order."""
    unique = list(dict.fromkeys(captions))
    translated = dict(zip(unique, generate(unique, lang)))
    return [translated[c] for c in captions]


class PerLanguageModels:
    """A backend with one model per target language, loaded on first use and kept for the run:
    `PROVENANCE` prefixes the model's name in each output row; subclasses implement `_model`."""

    PROVENANCE = ""

    def __init__(self, spec: Any, languages: list[str]) -> None:
        self.spec = spec
        self.languages = list(languages)
        self._models: dict[str, Any] = {}

    def model_name(self, lang: str) -> str:
        return model_name(self.spec.model, lang)

    def provenance(self, lang: str) -> str:
        return f"{self.PROVENANCE}:{self.model_name(lang)}"

    def load(self) -> None:
        """Load every language's model up front, so a bad name fails before any unit runs."""
        for lang in self.languages:
            self._model(lang)

    def _model(self, lang: str) -> Any:
        raise NotImplementedError
