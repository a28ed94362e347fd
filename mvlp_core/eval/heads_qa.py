"""xGQA the generative way: the question is the [qus] source, the answer is generated greedily
and scored by exact match, strict and after the spec's normalisation (side by side)."""

from __future__ import annotations

from pathlib import Path

import torch

from mvlp_core.contract import Reject
from mvlp_core.eval import data_xgqa
from mvlp_core.eval.images import ImageRoots
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import ImageCache, Prepared, decode_all, keep_resolved


def prepare_xgqa(path: Path, roots: ImageRoots, lang: str) -> tuple[list[Prepared], list[Reject]]:
    items = data_xgqa.load(path)
    return keep_resolved(
        [(i.id, [roots.gqa(i.image)], i.question, lang, i.answer) for i in items],
        [[f"{i.image}.jpg"] for i in items],
    )


@torch.no_grad()
def predict(
    em: EvalModel, items: list[Prepared], cache: ImageCache, batch_size: int = 16, max_new_tokens: int = 8
) -> tuple[dict[str, str], list[Reject]]:
    em.model.eval()
    pairs, rejects = decode_all(items, cache)
    out: dict[str, str] = {}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        exs = [
            em.example(
                task="qus", image=image, source=item.source, source_lang=item.lang, target="", caption=None
            )
            for item, image in chunk
        ]
        answers = em.model.generate(em.on_device(em.collate(exs)), max_new_tokens)
        for (item, _), answer in zip(chunk, answers):
            out[item.id] = answer.strip()
    return out, rejects


def training_examples(em: EvalModel, items: list[Prepared], cache: ImageCache) -> list:
    pairs, _ = decode_all(items, cache)
    return [
        em.example(
            task="qus", image=image, source=item.source, source_lang=item.lang, target=item.gold, caption=None
        )
        for item, image in pairs
    ]
