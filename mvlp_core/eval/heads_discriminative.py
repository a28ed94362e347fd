"""IGLUE's discriminative heads (VOLTA's protocol, seed digest §3b) for model families that expose a
fused [CLS]: the model and its head are a ``task_model.TaskModel``; this module turns IGLUE items
into its examples and its outputs into predictions, with the same inputs and outputs as the
generative heads (``heads_classify``, ``heads_qa``, ``heads_retrieval``), images decoded batch by
batch through the bounded ``ImageCache`` / ``Streamed``.

- XVNLI, MaRVL: the label with the highest logit (``data_xvnli.LABELS``; ``true``/``false``).
- xGQA: classification over IGLUE's answer vocabulary, ``gqa/annotations/trainval_ans2label.json``
  under the IGLUE root (1,842 answers; ``trainval_label2ans.json`` read alike), the answer with the
  highest logit scored by exact match as VOLTA scores GQA. A root without either file (a trimmed
  copy) takes the answers of the English training file, most frequent first (ties alphabetical), so
  the fine-tune can still run; nothing else (dev, test) is looked at.
- xFlickr&CO, WIT: pre-rank every caption–image pair by the dual encoder (cosine of
  ``image_features`` and ``text_features``), re-rank each query's top k (``iglue.rerank_k``, 16 in
  the paper) by ``match_logit``. As ALBEF (on which wsmVLP is built) scores them, a re-ranked pair
  scores ITM plus its cosine, lifted above every pair outside the top k, which keeps the dual
  encoder's order: the re-rank only reorders within the top k. Fine-tuning is ALBEF's (ITC + ITM)
  with in-batch hard negatives drawn ∝ softmax of the contrastive similarity, as the paper's
  released fine-tune draws them (``TaskModel._retrieval_loss``; ``iglue.finetune.itm_negatives:
  random`` draws them uniformly).

Which tasks a family reads this way is its ``IGLUE`` map: ``generative`` (UniGen's decoder heads), or
``discriminative`` (``classifier`` for XVNLI/xGQA/MaRVL and ``dual+itm`` for retrieval are read as
the same, the names the digest uses). Settings need nothing of their own: zero-shot tests the
English fine-tuned model on every language's file, translate-test on the machine-translated
(English) file, both through ``predict``/``evaluate``; the text is never tagged with a language.

Fine-tuning holds the family's ``FINETUNE_FREEZE`` prefixes (its uni-modal encoders) for the
classifier tasks, as the wsmVLP paper does for XVNLI/xGQA/MaRVL (Tables 7–8); retrieval fine-tunes
the dual encoder too, since its pre-rank decides which pairs the re-rank sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from mvlp_core.contract import Reject, StageError
from mvlp_core.eval import data_marvl, data_retrieval, data_xgqa, data_xvnli, heads_retrieval
from mvlp_core.eval.images import ImageRef
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import ImageCache, ImageSource, Pending, Prepared, Streamed, chunks, decoded
from mvlp_core.eval.task_model import IGNORE, TaskModel

CLASSIFIER_TASKS = ("xvnli", "xgqa", "marvl")
RETRIEVAL_TASKS = ("xflickrco", "wit")
# the IGLUE head kinds a family's IGLUE map may name for a task, besides "generative"
HEAD_KINDS = {
    **{t: ("discriminative", "classifier") for t in CLASSIFIER_TASKS},
    **{t: ("discriminative", "dual+itm") for t in RETRIEVAL_TASKS},
}
ANSWER_FILES = ("gqa/annotations/trainval_ans2label.json", "gqa/annotations/trainval_label2ans.json")


def is_discriminative(iglue: Mapping[str, str], task: str, family: str) -> bool:
    """Whether ``family``'s IGLUE map sends ``task`` to these heads (False: the generative ones)."""
    kind = iglue.get(task, "generative")
    if kind == "generative":
        return False
    if kind in HEAD_KINDS[task]:
        return True
    raise StageError(
        f"model family {family!r} maps IGLUE task {task} to head kind {kind!r}; implemented: "
        f"generative, {', '.join(HEAD_KINDS[task])} (mvlp_core/eval/heads_discriminative.py)"
    )


def freeze_prefixes(task: str, spec_freeze: Sequence[str], family_freeze: Sequence[str]) -> tuple[str, ...]:
    """The TaskModel's frozen name prefixes: the spec's (names of the family model's parameters,
    or already ``base.``/``head.``-prefixed), and the family's ``FINETUNE_FREEZE`` for the classifier
    tasks, each under ``base.`` where the TaskModel keeps the family model."""
    own = tuple(family_freeze) if task in CLASSIFIER_TASKS else ()
    inside = [p if p.startswith(("base.", "head.")) else f"base.{p}" for p in (*spec_freeze, *own)]
    return tuple(dict.fromkeys(inside))


def answer_vocabulary(root: Path, train: Path | None) -> list[str]:
    """xGQA's label set: IGLUE's ``trainval_ans2label.json`` (or ``label2ans``) under ``root``, else
    the training file's answers, most frequent first (module docstring)."""
    for rel in ANSWER_FILES:
        if (Path(root) / rel).is_file():
            return data_xgqa.load_answer_vocab(Path(root) / rel)
    if train is not None and train.is_file():
        counts = Counter(q.answer for q in data_xgqa.load(train))
        return sorted(counts, key=lambda a: (-counts[a], a))
    raise StageError(
        f"xGQA's answer vocabulary: neither {' nor '.join(str(Path(root) / r) for r in ANSWER_FILES)} nor "
        f"the English training file {train} exists; copy trainval_ans2label.json from IGLUE (gqa/annotations/)"
    )


def labels_for(task: str, root: Path, train: Path | None) -> tuple[str, ...]:
    """The labels a fresh head for ``task`` scores (none for retrieval)."""
    if task == "xvnli":
        return data_xvnli.LABELS
    if task == "marvl":
        return data_marvl.LABEL_WORDS
    if task == "xgqa":
        return tuple(answer_vocabulary(root, train))
    return ()


def task_model(em: EvalModel) -> TaskModel:
    if not isinstance(em.model, TaskModel):
        raise StageError(f"discriminative heads need a TaskModel; got {type(em.model).__name__}")
    return em.model


# classification ---------------------------------------------------------------------------------
def training_examples(em: EvalModel, items: list[Prepared], cache: ImageSource) -> Streamed:
    """Items with a gold label as examples of its index (XVNLI's ``-`` items skipped; an xGQA
    answer outside the label set is -1: an all-zero target, as VOLTA keeps it)."""
    index = {label: i for i, label in enumerate(task_model(em).labels)}
    pending = [
        Pending(i.images, {"text": i.source, "label": index.get(i.gold, -1)}, i.id)
        for i in items
        if i.gold is not None
    ]
    return Streamed(em.example, pending, cache)


@torch.no_grad()
def predict(
    em: EvalModel, items: list[Prepared], cache: ImageCache, batch_size: int = 16
) -> tuple[dict[str, str], list[Reject]]:
    """Item id -> the label (XVNLI, MaRVL) or answer (xGQA) with the highest logit."""
    model = task_model(em)
    model.eval()
    out: dict[str, str] = {}
    rejects: list[Reject] = []
    for chunk in chunks(decoded(items, cache, rejects), batch_size):
        exs = [em.example(image=image, text=item.source, label=IGNORE) for item, image in chunk]
        best = model.logits(em.on_device(em.collate(exs))).argmax(dim=1).tolist()
        for (item, _), b in zip(chunk, best):
            out[item.id] = model.labels[b]
    return out, rejects


# retrieval --------------------------------------------------------------------------------------
def retrieval_examples(
    em: EvalModel, rset: data_retrieval.RetrievalSet, paths: list[ImageRef], cache: ImageSource
) -> Streamed:
    """One example per caption, grouped by its image's key (in-batch negatives come from others)."""
    pending = [
        Pending((paths[img],), {"text": cap, "group": rset.images[img].key}, cap_id)
        for cap, img, cap_id in zip(rset.captions, rset.caption_image, rset.caption_ids)
    ]
    return Streamed(em.example, pending, cache)


def _family_model(em: EvalModel) -> torch.nn.Module:
    return em.model.base if isinstance(em.model, TaskModel) else em.model


def ranker(em: EvalModel) -> heads_retrieval.Ranker:
    """The dual encoder pre-ranks; the top k are re-scored by the ITM log-odds plus the cosine (as
    ALBEF sums them)."""
    model = _family_model(em)
    return heads_retrieval.Ranker(model, model.match_logit, 1.0)


def score_matrices(
    em: EvalModel, images: Sequence[torch.Tensor], captions: list[str], k: int, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(IR matrix, TR matrix), both [captions, images], by this family's ranker."""
    return heads_retrieval.score_matrices(em, images, captions, k, batch_size, ranker(em))


def evaluate(
    em: EvalModel, rset: data_retrieval.RetrievalSet, paths: list[ImageRef], cache: ImageCache, k: int
) -> tuple[dict[str, float], list[Reject], list[list[int]]]:
    """What ``heads_retrieval.evaluate`` returns, scored by the dual encoder and the ITM re-rank."""
    return heads_retrieval.evaluate(em, rset, paths, cache, k, ranker(em))
