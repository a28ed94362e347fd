"""ctranslate2 vs hf (transformers generate) output tokens/s on the same MarianMT and sentences.

The model is a random MarianMT (d_model 256, 3+3 layers, SentencePiece vocabulary trained on the
sentences) saved as an HF checkpoint and converted with CTranslate2's converter; the sentences
are the first Multi30K English captions. Both decode greedily through the stage's own backends,
with the same token budget per batch and the same thread count; the EOS logit is pushed down so
every sentence decodes to the same length limit and both do the same amount of work. Rows: the
production default (int8 on CPU) and float32 (the same arithmetic as hf).
"""

from __future__ import annotations

import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

MULTI30K = Path("/work/shared/data/multi30k/train.en.gz")
SENTENCES = 300
MAX_TOKENS = 32
BATCH_TOKENS = 1024
THREADS = 2


def _sentences() -> list[str]:
    with gzip.open(MULTI30K, "rt", encoding="utf-8") as f:
        return [next(f).strip() for _ in range(2000)]


def _output_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(ids) - 1 for ids in tokenizer(text_target=texts)["input_ids"])  # minus </s>


def run(runs: int = 3) -> list[dict]:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mvlp_core.spec import CT2TranslateSpec, HFTranslateSpec
    from mvlp_core.stages.translate.ct2_backend import CT2Backend, convert
    from mvlp_core.stages.translate.hf_backend import HFBackend
    from tests.tiny_marian import build_tiny_marian

    torch.set_num_threads(THREADS)
    corpus = _sentences()
    texts = corpus[:SENTENCES]
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = build_tiny_marian(
            Path(tmp) / "hf" / "m", corpus, d_model=256, layers=3, vocab_size=4000, eos_bias=-20.0
        )
        convert(str(hf_dir), Path(tmp) / "ct2" / "m")
        hf = HFBackend(
            HFTranslateSpec(model=str(hf_dir), batch_tokens=BATCH_TOKENS, max_new_tokens=MAX_TOKENS), ["de"]
        )
        engines = {"hf": hf}
        for compute in ("int8", "float32"):
            engines[compute] = CT2Backend(
                CT2TranslateSpec(
                    model=str(Path(tmp) / "ct2" / "m"),
                    compute_type=compute,
                    device="cpu",
                    batch_tokens=BATCH_TOKENS,
                    max_decoding_length=MAX_TOKENS,
                    intra_threads=THREADS,
                ),
                ["de"],
            )
        tok = hf._model("de").tokenizer
        for engine in engines.values():
            engine.load()
            engine.generate(texts[:8], "de")  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in engines}
        tokens: dict[str, int] = {}
        for _ in range(runs):
            for name, engine in engines.items():  # side by side, interleaved
                t0 = time.perf_counter()
                out = engine.generate(texts, "de")
                seconds = time.perf_counter() - t0
                tokens[name] = _output_tokens(tok, out)
                rates[name].append(tokens[name] / seconds)
    base = statistics.median(rates["hf"])
    rows = []
    for compute in ("int8", "float32"):
        value = statistics.median(rates[compute])
        rows.append(
            {
                "name": f"translate ctranslate2 ({compute}) vs hf generate, output tokens/s",
                "value": round(value, 1),
                "unit": "tokens/s",
                "baseline": "hf generate (float32)",
                "baseline_value": round(base, 1),
                "ratio": round(value / base, 2),
                "runs": runs,
                "higher_is_better": True,
                "notes": f"random MarianMT d256 3+3 layers, {SENTENCES} Multi30K en captions, greedy, "
                f"{MAX_TOKENS} tokens/sentence, {BATCH_TOKENS}-token batches, {THREADS} threads, "
                f"CPU; output tokens: ct2 {tokens[compute]}, hf {tokens['hf']}",
            }
        )
    return rows


if __name__ == "__main__":
    for row in run(1):
        print(row)
