"""IGLUE metrics on hand-worked cases: accuracy with unlabeled items, xGQA strict vs normalised,
IR/TR Recall@k with 1:N captions, ties, VOLTA top-k lists, averages without English."""

from __future__ import annotations

import numpy as np
import pytest

from mvlp_core.eval import metrics as m


def test_accuracy_counts_unlabelled_items_as_wrong() -> None:
    gold = ["entailment", None, "neutral", "contradiction"]
    pred = ["entailment", "neutral", "neutral", "neutral"]
    assert m.accuracy(gold, pred) == 50.0  # 2 of 4: the None item is in the denominator
    with pytest.raises(ValueError, match="4 gold labels but 3"):
        m.accuracy(gold, pred[:3])


def test_answer_normalisation_and_strict_vs_normalised() -> None:
    assert m.normalise_answer("The Red  Circle.", "vqa") == "red circle"
    assert m.normalise_answer("Two", "vqa") == "2"
    assert m.normalise_answer(" Yes ", "lower") == "yes"
    gold = ["yes", "red", "2", "circle"]
    pred = ["Yes", "red", "two", "a circle"]
    out = m.answer_accuracy(gold, pred, "vqa")
    assert out == {"accuracy": 25.0, "accuracy_normalised": 100.0}
    with pytest.raises(ValueError, match="unknown answer normalisation"):
        m.normalise_answer("x", "fancy")


def test_retrieval_hand_worked() -> None:
    # 3 images; captions 0,1 -> image 0, caption 2 -> image 1, caption 3 -> image 2
    caption_image = [0, 0, 1, 2]
    scores = np.array(
        [
            [0.9, 0.1, 0.0],  # c0: image 0 first            -> IR rank 0
            [0.2, 0.8, 0.1],  # c1: image 0 second           -> IR rank 1
            [0.5, 0.4, 0.3],  # c2: image 1 second           -> IR rank 1
            [0.1, 0.3, 0.2],  # c3: image 2 second           -> IR rank 1
        ]
    )
    assert m.ir_ranks(scores, caption_image).tolist() == [0, 1, 1, 1]
    # TR: image 0 column [.9,.2,.5,.1] -> c0 rank 0 (best of c0,c1); image 1 [.1,.8,.4,.3] -> c2
    # rank 1; image 2 [0,.1,.3,.2] -> c3 rank 1
    assert m.tr_ranks(scores, caption_image).tolist() == [0, 1, 1]
    out = m.retrieval_scores(scores, caption_image)
    assert out["ir_r1"] == 25.0 and out["ir_r5"] == 100.0
    assert out["tr_r1"] == pytest.approx(100 / 3) and out["tr_r10"] == 100.0


def test_ties_rank_lower_index_first() -> None:
    scores = np.zeros((2, 3))
    assert m.ir_ranks(scores, [0, 2]).tolist() == [0, 2]


def test_recall_over_many_images() -> None:
    n = 20
    scores = -np.abs(np.arange(n)[None, :] - np.arange(n)[:, None]).astype(float)
    scores[np.arange(n), np.arange(n)] = -100  # gold always ranked last
    out = m.retrieval_scores(scores, list(range(n)))
    assert out["ir_r1"] == 0.0 and out["ir_r10"] == 0.0


def test_ir_from_volta_topk_lists() -> None:
    topk = [[3, 0, 1], [0, 1, 2], [2, 1, 0], [4, 5, 6]]
    out = m.ir_from_topk(topk, [0, 0, 2, 1])
    assert out == {"ir_r1": 50.0, "ir_r5": 75.0, "ir_r10": 75.0}


def test_average_excludes_english() -> None:
    assert m.average_without_english({"en": 90.0, "de": 40.0, "fr": 60.0}) == 50.0
    assert m.average_without_english({"en": 90.0}) is None
