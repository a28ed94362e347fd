"""Score predictions made by any system against an IGLUE annotation file (``mvlp eval score``).

Prediction files (JSON):
- xvnli, marvl: ``[{"id" | "pairID": ..., "prediction": ...}]``; XVNLI predictions are label
  words or VOLTA's indices (0 contradiction, 1 neutral, 2 entailment); MaRVL predictions are
  booleans, ``"true"``/``"false"`` or 0/1.
- xgqa: ``[{"questionId": ..., "prediction": "answer"}]``; reports strict and normalised accuracy.
- xflickrco, wit: VOLTA's ``*_result.json``: one list per caption, in annotation order, of image
  indices best first (IR only); or ``{"scores": [[...]]}``, a full captions x images matrix (IR
  and TR). Image indices count images in order of first appearance in the annotation file.
Every prediction must match exactly one annotated item; anything else is an error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvlp_core.eval import data_marvl, data_retrieval, data_xgqa, data_xvnli, metrics
from mvlp_core.eval.io import AnnotationError, read_json
from mvlp_core.eval.tasks import TASKS

VOLTA_NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}


class PredictionError(ValueError):
    """Predictions that do not fit the annotations; the message names the cause."""


def _by_id(preds: Any, id_keys: Sequence[str], path: str) -> dict[str, Any]:
    if not isinstance(preds, list):
        raise PredictionError(f"{path}: expected a JSON list of objects, got {type(preds).__name__}")
    out: dict[str, Any] = {}
    for n, p in enumerate(preds):
        if not isinstance(p, dict) or "prediction" not in p:
            raise PredictionError(f"{path}: entry {n} is not an object with a 'prediction' field")
        key = next((k for k in id_keys if k in p), None)
        if key is None:
            raise PredictionError(f"{path}: entry {n} has no id field (one of {', '.join(id_keys)})")
        pid = str(p[key])
        if pid in out:
            raise PredictionError(f"{path}: duplicate prediction for id {pid!r}")
        out[pid] = p["prediction"]
    return out


def _align(ids: list[str], preds: dict[str, Any], path: str) -> list[Any]:
    missing = [i for i in ids if i not in preds]
    extra = sorted(set(preds) - set(ids))
    if missing:
        raise PredictionError(
            f"{path}: no prediction for {len(missing)} of {len(ids)} annotated items (first: {missing[:3]})"
        )
    if extra:
        raise PredictionError(
            f"{path}: {len(extra)} prediction(s) for ids not in the annotations (first: {extra[:3]})"
        )
    return [preds[i] for i in ids]


def _nli_label(value: Any, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value in VOLTA_NLI:
        return VOLTA_NLI[value]
    if isinstance(value, str) and value.strip().lower() in data_xvnli.LABELS:
        return value.strip().lower()
    raise PredictionError(
        f"{path}: prediction {value!r} is not one of {', '.join(data_xvnli.LABELS)} or 0/1/2"
    )


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise PredictionError(f"{path}: prediction {value!r} is not true/false")


def score_xvnli(annotations: str | Path, preds: Any, path: str) -> dict[str, float]:
    items = data_xvnli.load(annotations)
    got = _align([i.id for i in items], _by_id(preds, ("pairID", "id"), path), path)
    return {"accuracy": metrics.accuracy([i.label for i in items], [_nli_label(p, path) for p in got])}


def score_marvl(annotations: str | Path, preds: Any, path: str) -> dict[str, float]:
    items = data_marvl.load(annotations)
    got = _align([i.id for i in items], _by_id(preds, ("id", "identifier"), path), path)
    return {"accuracy": metrics.accuracy([i.label for i in items], [_bool(p, path) for p in got])}


def score_xgqa(annotations: str | Path, preds: Any, path: str, normalise: str = "vqa") -> dict[str, float]:
    items = data_xgqa.load(annotations)
    got = _align([i.id for i in items], _by_id(preds, ("questionId",), path), path)
    bad = next((p for p in got if not isinstance(p, str)), None)
    if bad is not None:
        raise PredictionError(f"{path}: prediction {bad!r} is not a string answer")
    return metrics.answer_accuracy([i.answer for i in items], got, normalise)


def score_retrieval(annotations: str | Path, preds: Any, path: str) -> dict[str, float]:
    rset = data_retrieval.load(annotations)
    n_caps, n_imgs = len(rset.captions), len(rset.images)
    if isinstance(preds, dict) and "scores" in preds:
        scores = np.asarray(preds["scores"], dtype=float)
        if scores.shape != (n_caps, n_imgs):
            raise PredictionError(
                f"{path}: score matrix has shape {list(scores.shape)}; the "
                f"annotations need [{n_caps} captions, {n_imgs} images]"
            )
        return metrics.retrieval_scores(scores, rset.caption_image)
    if not isinstance(preds, list) or not all(isinstance(r, list) for r in preds):
        raise PredictionError(
            f'{path}: expected a list (one per caption) of ranked image indices, or {{"scores": [[...]]}}'
        )
    if len(preds) != n_caps:
        raise PredictionError(
            f"{path}: {len(preds)} ranked lists but the annotations hold "
            f"{n_caps} captions (one list per caption, in annotation order)"
        )
    for n, ranked in enumerate(preds):
        bad = [i for i in ranked if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_imgs]
        if bad:
            raise PredictionError(f"{path}: list {n} holds {bad[0]!r}, not an image index in 0..{n_imgs - 1}")
    return metrics.ir_from_topk(preds, rset.caption_image)


def score_file(
    task: str, annotations: str | Path, predictions: str | Path, normalise: str = "vqa"
) -> dict[str, float]:
    if task not in TASKS:
        raise PredictionError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    path = str(predictions)
    try:
        preds = read_json(predictions)
    except AnnotationError as err:
        raise PredictionError(str(err)) from None
    if task == "xvnli":
        return score_xvnli(annotations, preds, path)
    if task == "marvl":
        return score_marvl(annotations, preds, path)
    if task == "xgqa":
        return score_xgqa(annotations, preds, path, normalise)
    return score_retrieval(annotations, preds, path)
