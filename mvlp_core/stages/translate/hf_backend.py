"""The `hf` backend: any transformers seq2seq checkpoint, by hub name or local path.

MarianMT checkpoints translate one pair each (`Helsinki-NLP/opus-mt-en-{lang}`); multilingual ones
(M2M100, NLLB) are steered to the target language (seq2seq.steering). Each language's model is
loaded once per stage run and kept; sentences are batched by token count, longest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM

from mvlp_core.contract import Reject
from mvlp_core.spec import HFTranslateSpec
from mvlp_core.stages.translate import seq2seq

FIELD = "translate.hf.model"


@dataclass
class _Loaded:
    tokenizer: Any
    model: Any
    steering: seq2seq.Steering
    generate_kwargs: dict[str, Any]


class HFBackend(seq2seq.PerLanguageModels):
    PROVENANCE = "hf"

    def __init__(self, spec: HFTranslateSpec, languages: list[str]) -> None:
        super().__init__(spec, languages)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _model(self, lang: str) -> _Loaded:
        if lang not in self._models:
            name = self.model_name(lang)
            tokenizer = seq2seq.load_tokenizer(name, FIELD, lang)
            try:
                model = AutoModelForSeq2SeqLM.from_pretrained(name)
            except Exception as err:  # any load failure is about the run, not a sample
                raise seq2seq.load_failure(FIELD, lang, name, err) from err
            steer = seq2seq.steering(tokenizer, lang, name)
            kwargs = {}
            if steer.target_token:
                kwargs["forced_bos_token_id"] = tokenizer.convert_tokens_to_ids(steer.target_token)
            self._models[lang] = _Loaded(tokenizer, model.to(self.device).eval(), steer, kwargs)
        return self._models[lang]

    def generate(self, texts: list[str], lang: str) -> list[str]:
        """Translate `texts` in input order, in batches of at most `batch_tokens` padded tokens."""
        loaded = self._model(lang)
        sources = [loaded.steering.source_prefix + t for t in texts]
        ids = loaded.tokenizer(sources, truncation=True)["input_ids"]
        out = [""] * len(texts)
        with torch.inference_mode():
            for batch in seq2seq.token_batches([len(x) for x in ids], self.spec.batch_tokens):
                enc = loaded.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(
                    self.device
                )
                generated = loaded.model.generate(
                    **enc,
                    num_beams=self.spec.num_beams,
                    max_new_tokens=self.spec.max_new_tokens,
                    do_sample=False,
                    **loaded.generate_kwargs,
                )
                texts_out = loaded.tokenizer.batch_decode(generated, skip_special_tokens=True)
                for i, text in zip(batch, texts_out):
                    out[i] = text.strip()
        return out

    def translate(self, keys: list[str], captions: list[str], lang: str) -> list[str | Reject]:
        return seq2seq.translate_unique(self.generate, captions, lang)
