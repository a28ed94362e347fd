"""The `ctranslate2` backend: seq2seq checkpoints converted to CTranslate2, int8 on CPU and float16
on GPU by default, several times faster than transformers' generate for the same greedy output.

`convert` turns an HF checkpoint (MarianMT, M2M-100, NLLB) into a model folder this backend loads,
with the tokenizer saved beside it. Tokenization and language steering are the hf backend's
(seq2seq), so both backends feed the model the same tokens; as there, a model folder several
languages name (a multilingual or multi-target model) is loaded once and shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mvlp_core.contract import Reject, StageError
from mvlp_core.spec import CT2TranslateSpec
from mvlp_core.stages.translate import seq2seq
from mvlp_core.stages.translate.codes import model_name

FIELD = "translate.ctranslate2.model"


def convert(
    checkpoint: str, out_dir: str | Path, quantization: str | None = None, force: bool = False
) -> Path:
    """Convert an HF seq2seq checkpoint (name or path) into a CTranslate2 folder with its tokenizer.

    `quantization` bakes a type into the weights (int8, float16, ...); None keeps float32 and
    leaves the choice to `compute_type` at load time.
    """
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoTokenizer

    out = Path(out_dir)
    TransformersConverter(checkpoint).convert(str(out), quantization=quantization, force=force)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(str(out))
    return out


def resolve_device(device: str) -> str:
    import ctranslate2

    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    if compute_type == "auto":
        return "float16" if device == "cuda" else "int8"
    return compute_type


def is_converted(folder: str) -> bool:
    return (Path(folder) / "model.bin").is_file()


def not_converted(name: str, langs: list[str]) -> StageError:
    return StageError(
        f"{FIELD}: {name} is not a CTranslate2 model folder (no model.bin) for en->{', '.join(langs)}. "
        "Convert the HF checkpoint first: python -c 'from mvlp_core.stages.translate."
        'ct2_backend import convert; convert("Helsinki-NLP/opus-mt-en-de", '
        '"/models/ct2/opus-mt-en-de")\' (or ct2-transformers-converter), then point '
        f"{FIELD} at the folder ({{lang}}/{{opus}} are filled per language)"
    )


class CT2Backend(seq2seq.SharedModels):
    PROVENANCE = "ctranslate2"
    FIELD = FIELD
    spec: CT2TranslateSpec

    def tokenizer_name(self, lang: str) -> str:
        """`translate.ctranslate2.tokenizer` filled for `lang`, else the model folder (where
        `convert` saves the tokenizer)."""
        return model_name(self.spec.tokenizer, lang) if self.spec.tokenizer else self.model_name(lang)

    def _unusable(self, name: str, langs: list[str]) -> StageError | None:
        return None if is_converted(name) else not_converted(name, langs)

    def _load(self, name: str, lang: str) -> Any:
        import ctranslate2

        device = resolve_device(self.spec.device)
        try:
            return ctranslate2.Translator(
                name,
                device=device,
                compute_type=resolve_compute_type(self.spec.compute_type, device),
                intra_threads=self.spec.intra_threads,
            )
        except Exception as err:  # a missing, corrupt or incompatible folder is about the run
            raise seq2seq.load_failure(FIELD, [lang], name, err) from err

    def generate(self, texts: list[str], lang: str) -> list[str]:
        tok, translator, steer = self.tokenizer(lang), self.model(lang), self.steering(lang)
        ids = tok([steer.source_prefix + t for t in texts], truncation=True)["input_ids"]
        sources = [tok.convert_ids_to_tokens(x) for x in ids]
        prefix = [[steer.target_token]] * len(texts) if steer.target_token else None
        results = translator.translate_batch(
            sources,
            target_prefix=prefix,
            max_batch_size=self.spec.batch_tokens,
            batch_type="tokens",
            beam_size=self.spec.beam_size,
            max_decoding_length=self.spec.max_decoding_length,
        )
        return [
            tok.decode(tok.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True).strip()
            for r in results
        ]

    def translate(self, keys: list[str], captions: list[str], lang: str) -> list[str | Reject]:
        return seq2seq.translate_unique(self.generate, captions, lang)
