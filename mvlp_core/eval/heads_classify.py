"""Classification the generative way (UniGen): the model reads the text with the image(s) after a
task token and the answer is the label word it finds most likely. Both tasks ask UniGen's [match]
question, does the text fit the image(s)? XVNLI ranks yes/maybe/no over the premise image, written
as entailment/neutral/contradiction; MaRVL ranks yes/no over the left and right images (K=2, each
read on its own and mixed by the statement's image gate, see mvlp_core.model.unigen), written as
true/false. The pretrained [match] head already checks a text against an image, which is what both
tasks ask; reading them as [qus] with the label names as words would start fine-tuning from a head
that never saw labels (README: what that measured). Fine-tuning uses the same example with the gold
word as target; images are decoded as each batch is built (``mvlp_core.eval.prepared``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mvlp_core.contract import Reject
from mvlp_core.eval import data_marvl, data_xvnli
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


@dataclass(frozen=True)
class Prompt:
    task: str  # the UniGen task token
    words: tuple[str, ...]  # what the decoder is scored on, one per label
    labels: tuple[str, ...]  # the labels the words stand for (gold and predictions)

    def word(self, label: str) -> str:
        return self.words[self.labels.index(label)]


PROMPTS = {
    "xvnli": Prompt("match", ("yes", "maybe", "no"), data_xvnli.LABELS),
    "marvl": Prompt("match", ("yes", "no"), data_marvl.LABEL_WORDS),
}


def prepare_xvnli(path: Path, roots: ImageRoots, lang: str) -> tuple[list[Prepared], list[Reject]]:
    items = data_xvnli.load(path)
    return keep_resolved(
        [(i.id, [roots.flickr_id(i.image)], i.hypothesis, lang, i.label) for i in items],
        [[f"{i.image}.jpg"] for i in items],
    )


def prepare_marvl(path: Path, roots: ImageRoots, lang: str) -> tuple[list[Prepared], list[Reject]]:
    items = data_marvl.load(path)
    if "nlvr2" in Path(path).parts:
        paths = [[roots.nlvr2(i.left, i.directory), roots.nlvr2(i.right, i.directory)] for i in items]
        # a training row's reference names its folder, as NLVR2 lays it out: train/<directory>/
        refs = [[f"train/{i.directory}/{s}" if i.directory else s for s in (i.left, i.right)] for i in items]
    else:
        paths = [
            [roots.marvl(i.lang, i.concept, i.left), roots.marvl(i.lang, i.concept, i.right)] for i in items
        ]
        refs = [[i.left, i.right] for i in items]
    gold = ["true" if i.label else "false" for i in items]
    return keep_resolved([(i.id, p, i.statement, lang, g) for i, p, g in zip(items, paths, gold)], refs)


def _fields(prompt: Prompt, item: Prepared, word: str) -> dict[str, Any]:
    """The model example's fields for ``item`` targeting ``word``, all but the image."""
    return {
        "task": prompt.task,
        "source": item.source,
        "source_lang": item.lang,
        "target": word,
        "caption": None,
    }


@torch.no_grad()
def predict(
    em: EvalModel, items: list[Prepared], prompt: Prompt, cache: ImageCache, batch_size: int = 16
) -> tuple[dict[str, str], list[Reject]]:
    """Item id -> the label whose word has the highest target log-probability."""
    em.model.eval()
    out: dict[str, str] = {}
    rejects: list[Reject] = []
    n = len(prompt.words)
    for chunk in chunks(decoded(items, cache, rejects), batch_size):
        exs = [
            em.example(image=image, **_fields(prompt, item, w)) for item, image in chunk for w in prompt.words
        ]
        scores = em.model.score_targets(em.on_device(em.collate(exs))).view(len(chunk), n)
        for (item, _), best in zip(chunk, scores.argmax(dim=1).tolist()):
            out[item.id] = prompt.labels[best]
    return out, rejects


def training_examples(em: EvalModel, items: list[Prepared], prompt: Prompt, cache: ImageSource) -> Streamed:
    """Items with a gold label as examples targeting its word (XVNLI's ``-`` items skipped)."""
    pending = [
        Pending(i.images, _fields(prompt, i, prompt.word(i.gold)), i.id) for i in items if i.gold is not None
    ]
    return Streamed(em.example, pending, cache)
