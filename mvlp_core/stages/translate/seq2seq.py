"""What the `hf` and `ctranslate2` backends share: finding a tokenizer, steering a checkpoint to the
target language, one loaded checkpoint per distinct model, the checks `mvlp plan` runs without
loading weights, and grouping sentences into batches by token count.

Three kinds of checkpoint: OPUS-MT pair models (nothing to steer), OPUS-MT multi-target models
(a `>>xxx<<` target token, read from the model's own vocabulary, opens the source) and
multilingual models (M2M-100, NLLB: English set as the source language, the target's language
token forced as the first output token). A checkpoint several languages resolve to (a multilingual
or multi-target model) is loaded once and shared by them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvlp_core.contract import StageError
from mvlp_core.hub import hub_reachable
from mvlp_core.stages.translate.codes import codes, model_name, unsupported

TOKEN_SAMPLE = 30  # target tokens an error lists at most


@dataclass(frozen=True)
class Steering:
    source_prefix: str = ""  # prepended to every source sentence
    target_token: str | None = None  # forced first output token


def load_failure(field: str, langs: list[str], name: str, err: Exception) -> StageError:
    reason = (str(err).strip().splitlines() or [""])[0][:300]
    return StageError(
        f"{field}: cannot load the en->{', '.join(langs)} model {name!r} ({type(err).__name__}: "
        f"{reason}). Give a local folder (for hf: config.json, weights and tokenizer files; for "
        "ctranslate2: a converted model with its tokenizer files); {lang} in the value is replaced "
        "by the target language and {opus} by its OPUS-MT model name, e.g. "
        f"--set {field}=/models/opus-mt-en-{{lang}}; loading by name needs the Hugging Face hub "
        "or HF_HOME pointing at a cache that holds it"
    )


def load_tokenizer(name: str, field: str, langs: list[str]) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as err:  # any load failure is about the run, not a sample
        raise load_failure(field, langs, name, err) from err


def _is_path(name: str) -> bool:
    """Whether `name` can only mean a local path (a hub id is `name` or `org/name`)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _unresolved(field: str, langs: list[str], name: str) -> StageError:
    from huggingface_hub import constants

    return StageError(
        f"{field}: cannot resolve {name} (for {', '.join(langs)}): it is no local folder, the "
        f"Hugging Face cache ({constants.HF_HUB_CACHE}) does not hold it and the hub "
        f"({constants.ENDPOINT}) is unreachable from here. Fix: point {field} at a local folder "
        f"(e.g. /models/{{opus}}), or set HF_HOME to a cache that holds {name} (fill one with "
        f"`hf download {name}` where the hub is reachable)"
    )


def find_tokenizer(name: str, field: str, langs: list[str], hub: Callable[[], bool]) -> Any:
    """`name`'s tokenizer, and no weights: from a local folder or the HF cache, else from the hub
    when `hub()` says it answers. A StageError naming the cause and the fix when there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as err:  # absent or unreadable: which one decides the message
        if Path(name).expanduser().exists():
            raise load_failure(field, langs, name, err) from err
        if _is_path(name):
            raise StageError(
                f"{field}: {name} (for {', '.join(langs)}) does not exist; stage the checkpoint "
                f"there (config.json, weights, tokenizer files) or point {field} at the folder "
                "that holds it"
            ) from err
    if not hub():
        raise _unresolved(field, langs, name)
    return load_tokenizer(name, field, langs)


def _has_token(tokenizer: Any, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def target_tokens(tokenizer: Any) -> list[str]:
    """The `>>xxx<<` target-language tokens in the vocabulary, sorted: a multi-target OPUS-MT model
    has several, a pair model none."""
    return sorted(t for t in tokenizer.get_vocab() if t.startswith(">>") and t.endswith("<<"))


def opus_target(tokens: list[str], lang: str) -> str | None:
    """Of the model's target tokens, the one for `lang`: the first of the language's codes
    (codes.py, script-specific first) the model has, in whatever case it spells it."""
    by_code = {t[2:-2].lower(): t for t in tokens}
    return next((by_code[c.lower()] for c in codes(lang).opus_targets if c.lower() in by_code), None)


def _sample(tokens: list[str]) -> str:
    shown = ", ".join(tokens[:TOKEN_SAMPLE])
    return shown if len(tokens) <= TOKEN_SAMPLE else f"{shown}, ... ({len(tokens)} in all)"


def _another_model(field: str, lang: str) -> str:
    """The fix for a model that cannot produce `lang`: another model for all, or for `lang` alone."""
    example = f"Helsinki-NLP/{codes(lang).opus}"
    section = field.rsplit(".", 1)[0]
    return (
        f"Fix: point {field} at a model that covers it (e.g. {example}), or replace the model for "
        f"this language alone with {section}.models.{lang}"
    )


def steering(tokenizer: Any, lang: str, name: str, field: str) -> Steering:
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
            _another_model(field, lang),
        )
    tokens = target_tokens(tokenizer)
    if not tokens:
        return Steering()  # a pair model: its one target needs no token
    token = opus_target(tokens, lang)
    if token is None:
        wanted = ", ".join(f">>{c}<<" for c in row.opus_targets)
        raise unsupported(
            lang,
            name,
            f"a multi-target OPUS-MT model with none of {wanted}; its target tokens: {_sample(tokens)}",
            _another_model(field, lang),
        )
    return Steering(source_prefix=f"{token} ")


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


class SharedModels:
    """A seq2seq backend's checkpoints, one per distinct model name, loaded on first use and kept
    for the run: every language that resolves to the same name (a multilingual or multi-target
    model) shares one copy, while each language keeps its own steering. `PROVENANCE` prefixes the
    model's name in each output row and `FIELD` names the spec field in messages; subclasses
    implement `_load` and may refuse a model before loading it (`_unusable`)."""

    PROVENANCE = ""
    FIELD = ""

    def __init__(self, spec: Any, languages: list[str]) -> None:
        self.spec = spec
        self.languages = list(languages)
        self._tokenizers: dict[str, Any] = {}  # by tokenizer name
        self._models: dict[str, Any] = {}  # by model name
        self._steering: dict[str, Steering] = {}  # by language

    def model_name(self, lang: str) -> str:
        """`lang`'s model: its entry in the section's `models`, else `model`, templates filled."""
        return model_name(self.spec.models.get(lang, self.spec.model), lang)

    def tokenizer_name(self, lang: str) -> str:
        return self.model_name(lang)

    def provenance(self, lang: str) -> str:
        return f"{self.PROVENANCE}:{self.model_name(lang)}"

    def tokenizer(self, lang: str) -> Any:
        name = self.tokenizer_name(lang)
        if name not in self._tokenizers:
            self._tokenizers[name] = load_tokenizer(name, self.FIELD, [lang])
        return self._tokenizers[name]

    def steering(self, lang: str) -> Steering:
        if lang not in self._steering:
            self._steering[lang] = steering(self.tokenizer(lang), lang, self.model_name(lang), self.FIELD)
        return self._steering[lang]

    def model(self, lang: str) -> Any:
        """`lang`'s loaded checkpoint, the same object for every language naming the same model."""
        name = self.model_name(lang)
        if name not in self._models:
            self._models[name] = self._load(name, lang)
        return self._models[name]

    def load(self) -> None:
        """Check and load everything before any unit runs: each model's folder, every language's
        target token (tokenizers only, so a missing token costs no weights), then each distinct
        checkpoint once."""
        for name, langs in self._by_name(self.model_name).items():
            if (err := self._unusable(name, langs)) is not None:
                raise err
        for lang in self.languages:
            self.steering(lang)
        for lang in self.languages:
            self.model(lang)

    def problems(self) -> list[str]:
        """The checks `mvlp plan` runs, loading no weights: each model usable (`_unusable`), its
        tokenizer resolvable by path or name, and a way to steer it to each of its languages. One
        line per problem."""
        hub = hub_reachable
        out = []
        for name, langs in self._by_name(self.model_name).items():
            if (err := self._unusable(name, langs)) is not None:
                out.append(str(err))
        for name, langs in self._by_name(self.tokenizer_name).items():
            try:
                tokenizer = find_tokenizer(name, self.FIELD, langs, hub)
            except StageError as err:
                out.append(str(err))
                continue
            for lang in langs:
                try:
                    steering(tokenizer, lang, self.model_name(lang), self.FIELD)
                except StageError as err:
                    out.append(str(err))
        return out

    def _by_name(self, name_of: Callable[[str], str]) -> dict[str, list[str]]:
        """The languages grouped by the name `name_of` gives each, in `languages` order."""
        groups: dict[str, list[str]] = {}
        for lang in self.languages:
            groups.setdefault(name_of(lang), []).append(lang)
        return groups

    def _unusable(self, name: str, langs: list[str]) -> StageError | None:
        """Why model `name` cannot serve `langs`, found without loading it; None: nothing found."""
        return None

    def _load(self, name: str, lang: str) -> Any:
        raise NotImplementedError
