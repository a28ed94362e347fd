"""IGLUE on its real layouts: NLVR2's training images under ``train/<directory>/``, and every test
unit on the split it says, never a dev file standing in for a missing test file unlabelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iglue_data import REAL_IGLUE, needs_real
from PIL import Image

from mvlp_core.contract import StageError
from mvlp_core.eval import data_marvl, tables
from mvlp_core.eval.heads_classify import prepare_marvl
from mvlp_core.eval.images import ImageRoots
from mvlp_core.eval.tasks import Layout, SplitFile
from mvlp_core.spec import load_spec
from mvlp_core.stages import iglue_eval


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)


def _nlvr2_row(identifier: str, **extra: object) -> dict:
    """A row as NLVR2's train.json / dev.json / test1.json hold it (the fields the loader reads)."""
    return {
        "identifier": identifier,
        "sentence": "There are two dogs.",
        "left_url": "http://example.org/l.jpg",
        "right_url": "http://example.org/r.jpg",
        "label": "True",
        **extra,
    }


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_nlvr2_training_images_are_read_from_train_directory(tmp_path: Path) -> None:
    """NLVR2 ships images/train/<directory>/<stem>-img0.png (``directory`` an int in train.json),
    dev and test1 images flat in dev/ and test1/."""
    images = tmp_path / "images" / "nlvr2"
    for stem, folder in [
        ("train-10171-0", "train/57"),
        ("train-2-1", "train/3"),
        ("dev-850-0", "dev"),
        ("test1-0-1", "test1"),
    ]:
        for side in ("img0", "img1"):
            _png(images / folder / f"{stem}-{side}.png")
    ann = tmp_path / "nlvr2" / "annotations"
    train = _write_jsonl(
        ann / "train.jsonl",
        [_nlvr2_row("train-10171-0-0", directory=57), _nlvr2_row("train-2-1-1", directory=3)],
    )
    dev = _write_jsonl(ann / "dev.jsonl", [_nlvr2_row("dev-850-0-0")])
    test = _write_jsonl(ann / "test.jsonl", [_nlvr2_row("test1-0-1-0")])
    roots = ImageRoots({"nlvr2": images})

    items, rejects = prepare_marvl(train, roots, "en")
    assert rejects == []
    assert [i.directory for i in data_marvl.load(train)] == ["57", "3"]
    assert [i.images for i in items] == [
        (images / "train/57/train-10171-0-img0.png", images / "train/57/train-10171-0-img1.png"),
        (images / "train/3/train-2-1-img0.png", images / "train/3/train-2-1-img1.png"),
    ]
    for split_file, folder in [(dev, "dev"), (test, "test1")]:
        items, rejects = prepare_marvl(split_file, roots, "en")
        assert rejects == [] and all(p.parent == images / folder for i in items for p in i.images)

    # a training image under another directory than its row names is a reject naming the image
    moved = _write_jsonl(ann / "moved.jsonl", [_nlvr2_row("train-2-1-1", directory=4)])
    items, rejects = prepare_marvl(moved, roots, "en")
    assert items == [] and [(r.key, r.reason, r.detail) for r in rejects] == [
        ("train-2-1-1", "missing_image", "train/4/train-2-1-img0, train/4/train-2-1-img1")
    ]


@needs_real
def test_real_copy_reads_iglue_test_files_or_names_the_missing_ones() -> None:
    """IGLUE scores xGQA on few_shot/<lang>/test.json in every language (English too) and English
    MaRVL on NLVR2's test.jsonl. The shared copy lacks both: they are errors by default, and with
    iglue.dev_when_no_test the dev files, labelled; every other unit reads a present test file."""
    strict, lenient = Layout(REAL_IGLUE), Layout(REAL_IGLUE, dev_when_no_test=True)
    for lang in ("en", "de"):
        wanted = REAL_IGLUE / f"xGQA/annotations/few_shot/{lang}/test.json"
        assert strict.test("xgqa", lang) == SplitFile(wanted) and not wanted.exists()
        dev = REAL_IGLUE / f"xGQA/annotations/few_shot/{lang}/dev.json"
        assert lenient.test("xgqa", lang) == SplitFile(dev, "dev") and dev.exists()
    assert strict.test("marvl", "en") == SplitFile(REAL_IGLUE / "nlvr2/annotations/test.jsonl")
    assert lenient.test("marvl", "en") == SplitFile(REAL_IGLUE / "nlvr2/annotations/dev.jsonl", "dev")
    for task, lang in [("xvnli", "ar"), ("marvl", "id"), ("xflickrco", "ja"), ("wit", "ko")]:
        found = lenient.test(task, lang)
        assert found.split == "test" and found.path.exists(), (task, lang)
    assert strict.test("xvnli", "fr", "translate-test").split == "test"


def test_xgqa_tests_on_its_few_shot_test_file_in_every_language_and_setting(tmp_path: Path) -> None:
    """IGLUE's scripts read xGQA/annotations/few_shot/<lang>/test.json, English included, zero-shot
    and few-shot alike; xGQA's own zero_shot/ testdev files are not what IGLUE scores. A missing
    test file is an error naming it (in `mvlp plan` and in the unit), though the dev file is there."""
    from mvlp_core.eval.selection import Unit, needed_for_test
    from mvlp_core.eval.units import _require

    root = tmp_path / "iglue"
    (root / "xGQA/annotations/zero_shot").mkdir(parents=True)
    (root / "xGQA/annotations/zero_shot/testdev_balanced_questions_de.json").write_text("{}")
    for lang in ("en", "ko"):
        (root / f"xGQA/annotations/few_shot/{lang}").mkdir(parents=True)
        (root / f"xGQA/annotations/few_shot/{lang}/test.json").write_text("{}")
    dev = root / "xGQA/annotations/few_shot/de/dev.json"
    dev.parent.mkdir(parents=True)
    dev.write_text("{}")
    wanted = root / "xGQA/annotations/few_shot/de/test.json"

    lay = Layout(root)
    for lang in ("en", "ko"):
        for setting in ("zero-shot", "few-shot"):
            assert lay.test("xgqa", lang, setting) == SplitFile(
                root / f"xGQA/annotations/few_shot/{lang}/test.json"
            )
    assert lay.test("xgqa", "de") == SplitFile(wanted)
    mt = lay.test("xgqa", "ko", "translate-test")
    assert mt == SplitFile(root / "xGQA/annotations_machine-translate/few_shot/ko/test.json")
    with pytest.raises(StageError, match=r"xgqa de zero-shot test file not found at .*de/test\.json.*iglue"):
        _require(needed_for_test(lay, Unit("xgqa", "zero-shot", "de")), "xgqa.zero-shot.de")

    spec = load_spec(
        "demo",
        [f"iglue.root={root}", "iglue.tasks=[xgqa]", "iglue.languages={xgqa: [de, ko]}"],
        workdir=tmp_path,
    )
    lines = [line for line in iglue_eval.checks(spec) if "test file" in line]
    assert len(lines) == 1 and str(wanted) in lines[0] and "drop de from iglue.languages.xgqa" in lines[0]


def test_marvl_english_reads_nlvr2s_test_file_and_its_dev_file_only_when_allowed(tmp_path: Path) -> None:
    ann = tmp_path / "nlvr2" / "annotations"
    _write_jsonl(ann / "dev.jsonl", [_nlvr2_row("dev-850-0-0")])
    assert Layout(tmp_path).test("marvl", "en") == SplitFile(ann / "test.jsonl")  # missing: an error
    assert Layout(tmp_path, dev_when_no_test=True).test("marvl", "en") == SplitFile(ann / "dev.jsonl", "dev")
    _write_jsonl(ann / "test.jsonl", [_nlvr2_row("test1-0-1-0")])
    assert Layout(tmp_path, dev_when_no_test=True).test("marvl", "en") == SplitFile(ann / "test.jsonl")


def _result(task: str, lang: str, score: float, split: str) -> dict:
    metric = {"xgqa": "accuracy", "marvl": "accuracy"}[task]
    return {
        "task": task,
        "setting": "zero-shot",
        "lang": lang,
        "split": split,
        "metrics": {metric: score},
        "headline": metric,
        "score": score,
        "chance": 50.0,
    }


def test_a_dev_split_is_labelled_in_tables_manifest_and_status(tmp_path: Path) -> None:
    results = [
        _result("xgqa", "en", 40.0, "test"),
        _result("xgqa", "de", 30.0, "dev"),
        _result("marvl", "en", 60.0, "dev"),
        _result("marvl", "de", 55.0, "test"),
        {"task": "marvl", "setting": "finetune", "unit": "marvl.finetune"},
    ]
    assert tables.splits(results) == {
        "xgqa": {"zero-shot": {"de": "dev"}},
        "marvl": {"zero-shot": {"en": "dev"}},
    }
    rows = tables.table_rows(results, "m")
    assert rows[("xgqa", "zero-shot", "accuracy")] == [
        {"model": "m", "en": 40.0, "de": 30.0, "avg": 30.0, "split": "dev: de"}
    ]
    assert rows[("marvl", "zero-shot", "accuracy")][0]["split"] == "dev: en"
    tables.write_csv(tmp_path / "t.csv", rows[("xgqa", "zero-shot", "accuracy")])
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "model,en,de,avg,split"

    # `mvlp status` shows the manifest's results through the stage's shows: lines and table
    state = {"results": tables.nested(results), "splits": tables.splits(results)}
    spec = load_spec("demo", workdir=tmp_path)
    line = iglue_eval.shows(spec, tmp_path, state).lines[0]
    assert "xgqa accuracy 40.0 / 30.0 (dev)" in line and "marvl accuracy 60.0 (dev) / 55.0" in line
    by_task = {r["task"]: r for r in iglue_eval.result_rows(state["results"], state["splits"])}
    assert by_task["xgqa"]["split"] == "dev: de" and by_task["marvl"]["split"] == "dev: en"

    # every language on a test split: no split column, as before
    plain = [_result("xgqa", "en", 40.0, "test"), _result("xgqa", "de", 30.0, "test")]
    assert "split" not in tables.table_rows(plain, "m")[("xgqa", "zero-shot", "accuracy")][0]


def _retrieval(task: str, lang: str, ir: float, tr: float, setting: str = "zero-shot") -> dict:
    return {
        "task": task,
        "setting": setting,
        "lang": lang,
        "split": "test",
        "metrics": {"ir_r1": ir, "ir_r5": ir + 20, "tr_r1": tr, "tr_r5": tr + 20},
        "headline": "ir_r1",
        "score": ir,
        "chance": 0.05,
    }


def test_text_retrieval_r1_stands_beside_image_retrievals_in_leaderboard_and_status(tmp_path: Path) -> None:
    """IGLUE reports retrieval as IR and TR R@1: the leaderboard has a tr_r1 row after each
    retrieval task's ir_r1 rows, `mvlp status` shows both; a manifest written before TR was kept
    shows IR alone."""
    a = [_retrieval("xflickrco", "en", 50.0, 40.0), _retrieval("xflickrco", "de", 30.0, 20.0)]
    a += [_retrieval("xflickrco", "de", 35.0, 25.0, "few-shot"), _result("marvl", "en", 60.0, "test")]
    b = [_retrieval("xflickrco", "en", 45.0, 44.0), _retrieval("xflickrco", "de", 25.0, 22.0)]
    assert tables.secondary(a) == {
        "xflickrco": {"zero-shot": {"en": 40.0, "de": 20.0}, "few-shot": {"de": 25.0}}
    }
    models = {
        name: {"results": tables.nested(rs), "splits": tables.splits(rs), "secondary": tables.secondary(rs)}
        for name, rs in (("a", a), ("b", b))
    }
    models["old"] = {"results": tables.nested(b), "splits": {}}  # no "secondary": written before
    rows = [(r["task"], r["metric"], r["model"], r["en"], r["avg"]) for r in iglue_eval.leaderboard(models)]
    assert rows == [
        ("xflickrco", "ir_r1", "a", "50.0", "30.0"),
        ("xflickrco", "ir_r1", "b", "45.0", "25.0"),
        ("xflickrco", "ir_r1", "old", "45.0", "25.0"),
        ("xflickrco", "tr_r1", "a", "40.0", "20.0"),
        ("xflickrco", "tr_r1", "b", "44.0", "22.0"),
        ("marvl", "accuracy", "a", "60.0", "-"),
    ]
    spec = load_spec("demo", workdir=tmp_path)
    lines = iglue_eval.shows(spec, tmp_path, {"models": models}).lines
    assert "  xflickrco tr_r1 (0.05): a 40.0 / 20.0, b 44.0 / 22.0" in lines
    single = iglue_eval.shows(spec, tmp_path, models["a"]).lines[0]
    assert "xflickrco ir_r1 50.0 / 30.0 (0.05), tr_r1 40.0 / 20.0;" in single
