"""Classification the generative way (UniGen): the model reads the text as a [qus] source with the
image(s) and the answer is the label word it finds most likely — XVNLI ranks
entailment/neutral/contradiction over the premise image, MaRVL ranks true/false over the left and
right images stacked as K=2. Fine-tuning uses the same example with the gold word as target.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mvlp_core.contract import Reject
from mvlp_core.eval import data_marvl, data_xvnli
from mvlp_core.eval.images import ImageRoots
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import ImageCache, Prepared, decode_all, keep_resolved

LABEL_WORDS = {"xvnli": data_xvnli.LABELS, "marvl": ("true", "false")}


def prepare_xvnli(path: Path, roots: ImageRoots, lang: str) -> tuple[list[Prepared], list[Reject]]:
    items = data_xvnli.load(path)
    return keep_resolved([(i.id, [roots.flickr_id(i.image)], i.hypothesis, lang, i.label) for i in items],
                         [[f"{i.image}.jpg"] for i in items])


def prepare_marvl(path: Path, roots: ImageRoots, lang: str) -> tuple[list[Prepared], list[Reject]]:
    items = data_marvl.load(path)
    if "nlvr2" in Path(path).parts:
        paths = [[roots.nlvr2(i.left), roots.nlvr2(i.right)] for i in items]
    else:
        paths = [[roots.marvl(i.lang, i.concept, i.left), roots.marvl(i.lang, i.concept, i.right)]
                 for i in items]
    gold = ["true" if i.label else "false" for i in items]
    return keep_resolved([(i.id, p, i.statement, lang, g) for i, p, g in zip(items, paths, gold)],
                         [[i.left, i.right] for i in items])


def examples(em: EvalModel, pairs: list[tuple[Prepared, torch.Tensor]], targets: list[str]) -> list:
    return [em.example(task="qus", image=image, source=item.source, source_lang=item.lang,
                       target=target, caption=None)
            for (item, image), target in zip(pairs, targets)]


@torch.no_grad()
def predict(em: EvalModel, items: list[Prepared], labels: tuple[str, ...], cache: ImageCache,
            batch_size: int = 16) -> tuple[dict[str, str], list[Reject]]:
    """Item id -> the label word with the highest target log-probability."""
    em.model.eval()
    pairs, rejects = decode_all(items, cache)
    out: dict[str, str] = {}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        expanded = [p for p in chunk for _ in labels]
        batch = em.on_device(em.collate(examples(em, expanded, list(labels) * len(chunk))))
        scores = em.model.score_targets(batch).view(len(chunk), len(labels))
        for (item, _), best in zip(chunk, scores.argmax(dim=1).tolist()):
            out[item.id] = labels[best]
    return out, rejects


def training_examples(em: EvalModel, items: list[Prepared], cache: ImageCache) -> list:
    """Items with a gold label as [qus] examples targeting the label word (``-`` items skipped)."""
    pairs, _ = decode_all([i for i in items if i.gold is not None], cache)
    return examples(em, pairs, [item.gold for item, _ in pairs])
