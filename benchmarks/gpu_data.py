"""The stage outputs the GPU benches train on, written from the synthetic world's grammar (a lent
GPU machine has no img2dataset, eflomal or corpora to run the data stages with): a `shard` stage
of 224 px images with captions in its six languages and rule-based QA, and a `text-shard` stage
of translation pairs (English with each other language) and monolingual sentences, in the
records and manifest the text-shard stage writes."""

from __future__ import annotations

import json
import random
from pathlib import Path

from mvlp_core import contract, sampling
from mvlp_core.synth.grammar import LANGS, caption, random_scene
from mvlp_core.tarmember import tar_file

TEXT_ALPHA = 0.3  # the text spec's default language-sampling exponent


def write_shard_stage(folder: Path, n: int) -> None:
    from mvlp_core.stages.qa.rules import questions
    from mvlp_core.synth.images import render_jpeg

    rng = random.Random(0)
    folder.mkdir(parents=True)
    with tar_file(folder / "shard-00000.tar") as tar:
        for i in range(n):
            scene, key = random_scene(rng), f"synthetic-{i:09d}"
            captions = {lang: caption(scene, lang) for lang in LANGS}
            qa = [
                {"question": q.question, "answer": q.answer, "generator": "rules"}
                for q in questions(captions["en"])
            ]
            tar.add(f"{key}.jpg", render_jpeg(scene, rng, size=224))
            tar.add(f"{key}.json", json.dumps({"key": key, "captions": captions, "qa": qa}).encode())
    contract.Manifest("shard", "gpu-bench", {"shard-00000.tar": {"samples": n}}, n, n, {}, 0.0, 1).save(
        folder
    )


def write_text_shard_stage(folder: Path, n: int) -> None:
    """`n` records a stream: en-xx pairs for each other language of the world, and each language's
    monolingual sentences (one tar a stream)."""
    rng = random.Random(1)
    folder.mkdir(parents=True)
    streams: dict[str, dict] = {}
    files: dict[str, dict] = {}
    kinds = [("parallel", ("en", lang)) for lang in LANGS[1:]] + [("mono", (lang,)) for lang in LANGS]
    for kind, langs in kinds:
        name = f"{kind}-{'-'.join(langs)}"
        tar_name = f"text-{name}-00000.tar"
        with tar_file(folder / tar_name) as tar:
            for i in range(n):
                scene, key = random_scene(rng), f"{name}-{i:09d}"
                texts = [caption(scene, lang) for lang in langs]
                record = {
                    "key": key,
                    "kind": kind,
                    "src_lang": langs[0],
                    "src": texts[0],
                    "tgt_lang": langs[1] if kind == "parallel" else None,
                    "tgt": texts[1] if kind == "parallel" else None,
                    "score": 1.1 if kind == "parallel" else None,
                    "corpus": "synthetic",
                }
                tar.add(f"{key}.json", json.dumps(record, ensure_ascii=False).encode())
        streams[name] = {"kind": kind, "langs": list(langs), "in": n, "out": n, "shards": [tar_name]}
        files[tar_name] = {"samples": n}
    mono = {langs[0]: n for kind, langs in kinds if kind == "mono"}
    pairs = {sampling.canonical_pair(langs): n for kind, langs in kinds if kind == "parallel"}
    extra = {
        "counts": {"mono": mono, "parallel": pairs, "streams": streams},
        "alpha": TEXT_ALPHA,
        "sampling_weights": {
            "mono": sampling.sampling_weights(mono, TEXT_ALPHA),
            "parallel": sampling.sampling_weights(pairs, TEXT_ALPHA),
        },
    }
    total = n * len(kinds)
    contract.Manifest("text-shard", "gpu-bench", files, total, total, {}, 0.0, len(kinds), extra).save(folder)
