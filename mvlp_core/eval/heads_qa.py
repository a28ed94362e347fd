"""xGQA the generative way: the question is the [qus] source, the answer is generated greedily
and scored by exact match, strict and after the spec's normalisation (side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mvlp_core.contract import Reject
from mvlp_core.eval import data_xgqa
from mvlp_core.eval.images import ImageRoots
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import (
    ImageCache,
    ImageSource,
    Pending,
    Prepared,
    Streamed,
    chunks,
    decoded,
    keep_resolved,
)


def prepare_xgqa(path: Path, roots: ImageRoots, lang: str) -> tuple[list[Prepared], list[Reject]]:
    items = data_xgqa.load(path)
    return keep_resolved(
        [(i.id, [roots.gqa(i.image)], i.question, lang, i.answer) for i in items],
        [[f"{i.image}.jpg"] for i in items],
    )


def _fields(item: Prepared, target: str) -> dict[str, Any]:
    """The [qus] example's fields for ``item``, all but the image."""
    return {"task": "qus", "source": item.source, "source_lang": item.lang, "target": target, "caption": None}


@torch.no_grad()
def predict(
    em: EvalModel, items: list[Prepared], cache: ImageCache, batch_size: int = 16, max_new_tokens: int = 8
) -> tuple[dict[str, str], list[Reject]]:
    """Question id -> the greedily generated answer, one batch of images decoded at a time."""
    em.model.eval()
    out: dict[str, str] = {}
    rejects: list[Reject] = []
    for chunk in chunks(decoded(items, cache, rejects), batch_size):
        exs = [em.example(image=image, **_fields(item, "")) for item, image in chunk]
        answers = em.model.generate(em.on_device(em.collate(exs)), max_new_tokens)
        for (item, _), answer in zip(chunk, answers):
            out[item.id] = answer.strip()
    return out, rejects


def training_examples(em: EvalModel, items: list[Prepared], cache: ImageSource) -> Streamed:
    """Each question as a [qus] example targeting its answer, images decoded batch by batch."""
    return Streamed(em.example, [Pending(i.images, _fields(i, i.gold), i.id) for i in items], cache)
