"""The `hf` backend: any transformers seq2seq checkpoint, by hub name or local path.

MarianMT checkpoints translate one pair each (`Helsinki-NLP/opus-mt-en-{lang}`) or, multi-target,
into the language their `>>xxx<<` token names; multilingual ones (M2M100, NLLB) are steered to the
target language (seq2seq.steering). Each distinct checkpoint is loaded once per stage run, in
`translate.hf.dtype`, and shared by the languages that name it; sentences are batched by token
count, longest first.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM

from mvlp_core.contract import Reject
from mvlp_core.spec import HFTranslateSpec
from mvlp_core.stages.translate import seq2seq

FIELD = "translate.hf.model"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype `translate.hf.dtype` means on `device`. auto: bfloat16 on a CUDA GPU that
    supports it, float16 on one that does not (both halve memory and speed up generate), float32
    on CPU (where half precision is slow or unsupported)."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type != "cuda":
        return torch.float32
    # bf16 in hardware (Ampere and later); torch's own check also counts emulation, which a
    # V100 or T4 offers at a fraction of its fp16 speed
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


class HFBackend(seq2seq.SharedModels):
    PROVENANCE = "hf"
    FIELD = FIELD
    spec: HFTranslateSpec

    def __init__(self, spec: HFTranslateSpec, languages: list[str]) -> None:
        super().__init__(spec, languages)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = resolve_dtype(spec.dtype, self.device)

    def _load(self, name: str, lang: str) -> torch.nn.Module:
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=self.dtype)
        except Exception as err:  # any load failure is about the run, not a sample
            raise seq2seq.load_failure(FIELD, [lang], name, err) from err
        return model.to(self.device).eval()

    def generate(self, texts: list[str], lang: str) -> list[str]:
        """Translate `texts` in input order, in batches of at most `batch_tokens` padded tokens."""
        tokenizer, model, steer = self.tokenizer(lang), self.model(lang), self.steering(lang)
        kwargs = {}
        if steer.target_token:
            kwargs["forced_bos_token_id"] = tokenizer.convert_tokens_to_ids(steer.target_token)
        ids = tokenizer([steer.source_prefix + t for t in texts], truncation=True)["input_ids"]
        out = [""] * len(texts)
        with torch.inference_mode():
            for batch in seq2seq.token_batches([len(x) for x in ids], self.spec.batch_tokens):
                enc = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                generated = model.generate(
                    **enc.to(self.device),
                    num_beams=self.spec.num_beams,
                    max_new_tokens=self.spec.max_new_tokens,
                    do_sample=False,
                    **kwargs,
                )
                for i, text in zip(batch, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                    out[i] = text.strip()
        return out

    def translate(self, keys: list[str], captions: list[str], lang: str) -> list[str | Reject]:
        return seq2seq.translate_unique(self.generate, captions, lang)
