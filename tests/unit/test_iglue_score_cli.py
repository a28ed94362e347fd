"""`mvlp eval score` on the real annotation files with predictions whose score is known exactly,
and clear errors for predictions that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iglue_data import REAL_IGLUE as R
from iglue_data import needs_real
from typer.testing import CliRunner

from flows.cli import app
from mvlp_core.eval import data_marvl, data_retrieval, data_xgqa, data_xvnli

pytestmark = needs_real
runner = CliRunner()


def score(tmp_path: Path, task: str, annotations: Path, preds: object) -> tuple[int, str]:
    pred_file = tmp_path / "preds.json"
    pred_file.write_text(json.dumps(preds), encoding="utf-8")
    res = runner.invoke(
        app,
        [
            "eval",
            "score",
            "--task",
            task,
            "--annotations",
            str(annotations),
            "--predictions",
            str(pred_file),
            "--json",
        ],
    )
    return res.exit_code, res.output


def test_xvnli_all_correct_is_iglue_ceiling_and_a_known_fraction(tmp_path: Path) -> None:
    ann = R / "XVNLI/annotations/ar/test.jsonl"
    items = data_xvnli.load(ann)
    gold = [{"pairID": i.id, "prediction": i.label or "neutral"} for i in items]
    code, out = score(tmp_path, "xvnli", ann, gold)
    assert code == 0
    # the 14 '-' items can never be right: IGLUE's ceiling is 1150/1164
    assert json.loads(out)["accuracy"] == pytest.approx(100 * 1150 / 1164)
    always_entail = [{"id": i.id, "prediction": 2} for i in items]  # VOLTA index 2 = entailment
    code, out = score(tmp_path, "xvnli", ann, always_entail)
    assert json.loads(out)["accuracy"] == pytest.approx(100 * 394 / 1164)


def test_marvl_and_xgqa(tmp_path: Path) -> None:
    ann = R / "marvl/zero_shot/annotations/marvl-id.jsonl"
    items = data_marvl.load(ann)
    code, out = score(tmp_path, "marvl", ann, [{"id": i.id, "prediction": i.label} for i in items])
    assert code == 0 and json.loads(out) == {"accuracy": 100.0}
    code, out = score(tmp_path, "marvl", ann, [{"id": i.id, "prediction": "true"} for i in items])
    assert json.loads(out) == {"accuracy": 50.0}  # 564 of 1128 are true

    ann = R / "xGQA/annotations/few_shot/de/dev.json"
    qs = data_xgqa.load(ann)
    preds = [
        {"questionId": q.id, "prediction": q.answer.upper() if k % 2 else q.answer} for k, q in enumerate(qs)
    ]
    code, out = score(tmp_path, "xgqa", ann, preds)
    result = json.loads(out)
    assert result["accuracy_normalised"] == 100.0
    assert result["accuracy"] == pytest.approx(
        100 * sum(1 for k, q in enumerate(qs) if k % 2 == 0 or q.answer.upper() == q.answer) / len(qs)
    )


def test_retrieval_topk_and_score_matrix(tmp_path: Path) -> None:
    ann = R / "xFlickrCO/annotations/de/test.jsonl"
    rset = data_retrieval.load(ann)
    n = len(rset.images)
    # caption c's image ranked first for even c, at rank 7 for odd c
    topk = [
        [g] + [(g + j) % n for j in range(1, 10)]
        if c % 2 == 0
        else [(g + j) % n for j in range(1, 8)] + [g] + [(g + 20) % n, (g + 21) % n]
        for c, g in enumerate(rset.caption_image)
    ]
    code, out = score(tmp_path, "xflickrco", ann, topk)
    assert code == 0 and json.loads(out) == {"ir_r1": 50.0, "ir_r5": 50.0, "ir_r10": 100.0}

    wit = R / "wit/annotations/test_ar.jsonl"
    wset = data_retrieval.load(wit)
    scores = [[1.0 if j == g else 0.0 for j in range(len(wset.images))] for g in wset.caption_image]
    code, out = score(tmp_path, "wit", wit, {"scores": scores})
    result = json.loads(out)
    assert code == 0 and result["ir_r1"] == 100.0 and result["tr_r1"] == 100.0


def test_bad_predictions_name_the_cause(tmp_path: Path) -> None:
    ann = R / "XVNLI/annotations/en/test.jsonl"
    items = data_xvnli.load(ann)
    code, out = score(tmp_path, "xvnli", ann, [{"pairID": i.id, "prediction": "neutral"} for i in items[:-2]])
    assert code == 2 and "no prediction for 2 of 1164" in out
    code, out = score(tmp_path, "xvnli", ann, [{"pairID": i.id, "prediction": "maybe"} for i in items])
    assert code == 2 and "'maybe' is not one of" in out
    code, out = score(tmp_path, "xvnli", ann, {"x": 1})
    assert code == 2 and "expected a JSON list" in out
    code, out = score(tmp_path, "xflickrco", R / "xFlickrCO/annotations/de/test.jsonl", [[0]] * 5)
    assert code == 2 and "5 ranked lists but the annotations hold 2000 captions" in out
    code, out = score(tmp_path, "wit", R / "wit/annotations/test_ar.jsonl", {"scores": [[0.0]]})
    assert code == 2 and "score matrix has shape [1, 1]" in out
    res = runner.invoke(
        app,
        [
            "eval",
            "score",
            "--task",
            "vqa",
            "--annotations",
            str(ann),
            "--predictions",
            str(tmp_path / "preds.json"),
        ],
    )
    assert res.exit_code == 2 and "unknown task 'vqa'" in res.output
