"""The `hf` backend: any transformers seq2seq checkpoint, by hub name or local path.

MarianMT checkpoints translate one pair each (`Helsinki-NLP/opus-mt-en-{lang}`); multilingual ones
(M2M100, NLLB) are steered to the target language through their source-language setting and a
forced first output token. Each language's model is loaded once per stage run and kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from mvlp_core.contract import Reject, StageError
from mvlp_core.spec import HFTranslateSpec

# NLLB names languages by FLORES-200 code; M2M100 by `__xx__` tokens.
FLORES = {
    "ar": "arb_Arab", "bg": "bul_Cyrl", "bn": "ben_Beng", "cs": "ces_Latn", "da": "dan_Latn",
    "de": "deu_Latn", "el": "ell_Grek", "es": "spa_Latn", "et": "est_Latn", "fr": "fra_Latn",
    "id": "ind_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "pt": "por_Latn", "ru": "rus_Cyrl",
    "sw": "swh_Latn", "ta": "tam_Taml", "tr": "tur_Latn", "vi": "vie_Latn", "zh": "zho_Hans",
}  # fmt: skip


@dataclass
class _Loaded:
    tokenizer: Any
    model: Any
    generate_kwargs: dict[str, Any]


def target_language_setup(tokenizer: Any, lang: str, name: str) -> dict[str, Any]:
    """Generation kwargs that make a multilingual checkpoint write `lang`; {} for per-pair models.

    Sets the tokenizer's source language to English as a side effect.
    """
    if not hasattr(tokenizer, "src_lang"):
        return {}
    for src, tgt in (("en", f"__{lang}__"), ("eng_Latn", FLORES.get(lang))):
        token_id = tokenizer.convert_tokens_to_ids(tgt) if tgt else None
        if token_id is not None and token_id != tokenizer.unk_token_id:
            tokenizer.src_lang = src
            return {"forced_bos_token_id": token_id}
    raise StageError(
        f"translate.hf.model: {name} is a multilingual checkpoint but has no language token for "
        f"{lang!r} (looked for __{lang}__ and {FLORES.get(lang)}); use a model that covers {lang} "
        f"or a per-pair model such as Helsinki-NLP/opus-mt-en-{lang}"
    )


class HFBackend:
    """Batched generation with one model per target language."""

    def __init__(self, spec: HFTranslateSpec, languages: list[str]) -> None:
        self.spec = spec
        self.languages = list(languages)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._models: dict[str, _Loaded] = {}

    def model_name(self, lang: str) -> str:
        return self.spec.model.replace("{lang}", lang)

    def provenance(self, lang: str) -> str:
        return f"hf:{self.model_name(lang)}"

    def load(self) -> None:
        """Load every language's model up front, so a bad name fails before any unit runs."""
        for lang in self.languages:
            self._model(lang)

    def _model(self, lang: str) -> _Loaded:
        if lang not in self._models:
            name = self.model_name(lang)
            try:
                tokenizer = AutoTokenizer.from_pretrained(name)
                model = AutoModelForSeq2SeqLM.from_pretrained(name)
            except Exception as err:  # any load failure is about the run, not a sample
                reason = (str(err).strip().splitlines() or [""])[0][:300]
                raise StageError(
                    f"translate.hf.model: cannot load the en->{lang} model {name!r} "
                    f"({type(err).__name__}: {reason}). Give a local checkpoint folder (config.json, "
                    "weights and tokenizer files; {lang} in the value is replaced by the target "
                    "language), e.g. --set translate.hf.model=/models/opus-mt-en-{lang}; loading "
                    "by name needs the Hugging Face hub or a filled HF cache"
                ) from err
            kwargs = target_language_setup(tokenizer, lang, name)
            self._models[lang] = _Loaded(tokenizer, model.to(self.device).eval(), kwargs)
        return self._models[lang]

    def generate(self, texts: list[str], lang: str) -> list[str]:
        """Translate `texts` in input order; batches are formed longest-first for less padding."""
        loaded = self._model(lang)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = [""] * len(texts)
        step = self.spec.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), step):
                batch = order[start : start + step]
                enc = loaded.tokenizer(
                    [texts[i] for i in batch], return_tensors="pt", padding=True, truncation=True
                ).to(self.device)
                ids = loaded.model.generate(
                    **enc,
                    num_beams=self.spec.num_beams,
                    max_new_tokens=self.spec.max_new_tokens,
                    do_sample=False,
                    **loaded.generate_kwargs,
                )
                for i, text in zip(batch, loaded.tokenizer.batch_decode(ids, skip_special_tokens=True)):
                    out[i] = text.strip()
        return out

    def translate(self, keys: list[str], captions: list[str], lang: str) -> list[str | Reject]:
        unique = list(dict.fromkeys(captions))
        translated = dict(zip(unique, self.generate(unique, lang)))
        return [
            translated[c] or Reject(k, "empty_output", f"model {self.model_name(lang)}")
            for k, c in zip(keys, captions)
        ]
