"""Metrics exactly as IGLUE (VOLTA's ``eval_task.py`` / ``eval_retrieval.py``) computes them.

- Accuracy (XVNLI, xGQA, MaRVL): correct / all items, in percent. Items without a gold label
  (XVNLI's ``-``) stay in the denominator and are never correct: VOLTA gives them an all-zero
  target, so they score 0.
- Retrieval from a caption x image score matrix: image retrieval (IR) ranks all images for each
  caption; the rank is the 0-based position of the caption's image in the descending order.
  Text retrieval (TR) ranks all captions for each image; an image's rank is the best rank among
  its captions (the 1:N caption->image mapping). Recall@k = 100 * share of queries with rank < k.
  Ties: VOLTA sorts with ``np.argsort(-scores)``; we use a stable sort so equal scores rank by
  lower index first (deterministic, and what numpy's sort gives on small arrays).
- From VOLTA's ``*_result.json`` (per caption, the top-k image indices in descending order) only IR
  can be computed: a caption whose image is not in its list has rank >= k.
- The reported average over languages excludes English.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

RECALL_AT = (1, 5, 10)


def percent(correct: int, total: int) -> float:
    return 100.0 * correct / total if total else 0.0


def accuracy(gold: Sequence[object | None], pred: Sequence[object]) -> float:
    """Percent of items whose prediction equals the gold; a gold of None is never matched."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    return percent(sum(g is not None and g == p for g, p in zip(gold, pred)), len(gold))


# -- xGQA answers ---------------------------------------------------------------------------------

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|:.']")


def normalise_answer(text: str, mode: str = "vqa") -> str:
    """``none``: as is. ``lower``: lowercased, outer whitespace stripped. ``vqa``: the VQA
    evaluation's answer processing in short: lowercase, punctuation removed, number words to
    digits, articles dropped, whitespace collapsed."""
    if mode == "none":
        return text
    text = text.strip().lower()
    if mode == "lower":
        return text
    if mode != "vqa":
        raise ValueError(f"unknown answer normalisation {mode!r}; allowed: none, lower, vqa")
    text = _PUNCT.sub(" ", text)
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def answer_accuracy(gold: Sequence[str], pred: Sequence[str], mode: str = "vqa") -> dict[str, float]:
    """xGQA exact match: ``strict`` (strings equal) and ``normalised`` (after ``mode``)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold answers but {len(pred)} predictions")
    strict = sum(g == p for g, p in zip(gold, pred))
    norm = sum(normalise_answer(g, mode) == normalise_answer(p, mode) for g, p in zip(gold, pred))
    return {"accuracy": percent(strict, len(gold)), "accuracy_normalised": percent(norm, len(gold))}


# -- retrieval ------------------------------------------------------------------------------------


def _ranks(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """0-based rank of column gold[i] in row i of ``scores`` (descending, stable)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.argmax(order == gold[:, None], axis=1)


def ir_ranks(scores: np.ndarray, caption_image: Sequence[int]) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    return _ranks(scores, np.asarray(caption_image))


def tr_ranks(scores: np.ndarray, caption_image: Sequence[int]) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    caption_image = np.asarray(caption_image)
    order = np.argsort(-scores.T, axis=1, kind="stable")  # [images, captions]
    position = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    position[rows, order] = np.arange(order.shape[1])[None, :]
    ranks = np.full(scores.shape[1], np.iinfo(np.int64).max, dtype=np.int64)
    for c, img in enumerate(caption_image):
        ranks[img] = min(ranks[img], position[img, c])
    return ranks


def recalls(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    ranks = np.asarray(ranks)
    return {f"{prefix}_r{k}": percent(int(np.sum(ranks < k)), len(ranks)) for k in RECALL_AT}


def retrieval_scores(scores: np.ndarray, caption_image: Sequence[int]) -> dict[str, float]:
    """IR and TR Recall@1/5/10 (percent) from a [captions, images] score matrix."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != len(caption_image):
        raise ValueError(f"score matrix of shape {scores.shape} for {len(caption_image)} captions")
    if len(caption_image) and max(caption_image) >= scores.shape[1]:
        raise ValueError(f"caption points at image {max(caption_image)} of {scores.shape[1]}")
    return {
        **recalls(ir_ranks(scores, caption_image), "ir"),
        **recalls(tr_ranks(scores, caption_image), "tr"),
    }


def ir_from_topk(topk: Sequence[Sequence[int]], caption_image: Sequence[int]) -> dict[str, float]:
    """IR Recall@1/5/10 from per-caption ranked image indices (VOLTA's ``*_result.json``)."""
    if len(topk) != len(caption_image):
        raise ValueError(f"{len(topk)} ranked lists for {len(caption_image)} captions")
    ranks = []
    for ranked, gold in zip(topk, caption_image):
        ranked = list(ranked)
        ranks.append(ranked.index(gold) if gold in ranked else max(len(ranked), max(RECALL_AT)))
    return recalls(np.asarray(ranks), "ir")


def average_without_english(by_lang: Mapping[str, float]) -> float | None:
    values = [v for lang, v in by_lang.items() if lang != "en" and v is not None]
    return sum(values) / len(values) if values else None
