"""A miniature IGLUE root for unit tests of the iglue-eval units: a few items of XVNLI, xGQA, NLVR2/
MaRVL and xFlickr&CO in IGLUE's layout, 8 px images of three colours whose names the texts say."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def tone(rng: random.Random, name: str) -> tuple[int, int, int]:
    """A shade of a named colour, so no two images of one colour need be the same."""
    return tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLOURS[name])


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def mini_iglue(root: Path) -> None:
    """A few items of XVNLI, xGQA (no answer-vocabulary file), NLVR2/MaRVL and xFlickr&CO in IGLUE's
    layout: English train/dev/test, German test and translate-test."""
    rng, names = random.Random(0), list(COLOURS)
    img = root / "images"

    def colour(i: int) -> str:
        return names[i % 3]

    def nli(split: str, n: int) -> list[dict[str, Any]]:
        rows = []
        for i in range(n):
            png(img / f"flickr30k/{split}{i}.jpg", tone(rng, colour(i)))
            said = colour(i) if i % 2 else colour(i + 1)
            gold = "entailment" if i % 2 else "contradiction"
            rows.append(
                {"gold_label": gold, "sentence1": "-", "sentence2": f"the picture is {said}"}
                | {"pairID": f"{split}{i}", "Flikr30kID": f"{split}{i}"}
            )
        return rows

    for rel, n in (("en/train", 24), ("en/dev", 6), ("en/test", 6), ("de/test", 6)):
        _jsonl(root / f"XVNLI/annotations/{rel}.jsonl", nli(rel.replace("/", ""), n))
    _jsonl(root / "XVNLI/annotations_machine-translate/de/test.jsonl", nli("detest", 6))

    def gqa(split: str, n: int) -> dict[str, Any]:
        for i in range(n):
            png(img / f"gqa/{split}{i}.jpg", tone(rng, colour(i)))
        return {
            f"{split}{i}": {"question": "what colour?", "imageId": f"{split}{i}", "answer": colour(i)}
            for i in range(n)
        }

    _json(root / "gqa/annotations/train_balanced_questions.json", gqa("tr", 24))
    _json(root / "xGQA/annotations/few_shot/en/dev.json", gqa("dev", 6))
    _json(root / "xGQA/annotations/few_shot/de/dev.json", gqa("dev", 6))
    for rel in (
        "annotations/few_shot/en",
        "annotations/few_shot/de",
        "annotations_machine-translate/few_shot/de",
    ):
        _json(root / f"xGQA/{rel}/test.json", gqa("te", 6))

    def nlvr2(split: str, n: int) -> list[dict[str, Any]]:
        for i in range(n):
            for side in (0, 1):
                png(img / f"nlvr2/{split}-{i}-0-img{side}.png", tone(rng, colour(i + side)))
        return [
            {"identifier": f"{split}-{i}-0-0", "sentence": f"the left image is {colour(i + i % 2)}"}
            | {"left_url": "", "right_url": "", "label": str(i % 2 == 0)}
            for i in range(n)
        ]

    _jsonl(root / "nlvr2/annotations/train.jsonl", nlvr2("train", 24))
    _jsonl(root / "nlvr2/annotations/dev.jsonl", nlvr2("dev", 6))
    _jsonl(root / "nlvr2/annotations/test.jsonl", nlvr2("test1", 6))
    marvl = []
    for i in range(6):
        for side in "lr":
            png(img / f"marvl/de/m{i}{side}.jpg", tone(rng, colour(i + (side == "r"))))
        marvl.append(
            {"concept": "1-x", "language": "de", "caption": f"the left image is {colour(i)}"}
            | {"left_img": f"m{i}l.jpg", "right_img": f"m{i}r.jpg", "id": f"m{i}", "label": True}
        )
    _jsonl(root / "marvl/zero_shot/annotations/marvl-de.jsonl", marvl)
    _jsonl(root / "marvl/zero_shot/annotations_machine-translate/marvl-de_gmt.jsonl", marvl)

    def flickr(split: str, n: int) -> list[dict[str, Any]]:
        for i in range(n):
            png(img / f"flickr30k/{split}f{i}.jpg", tone(rng, colour(i)))
        return [
            {
                "sentences": [f"a {colour(i)} picture", f"it is {colour(i)}"],
                "id": f"{split}f{i}",
                "img_path": f"{split}f{i}.jpg",
            }
            for i in range(n)
        ]

    _jsonl(root / "flickr30k/annotations/train_ann.jsonl", flickr("tr", 12))
    _jsonl(root / "flickr30k/annotations/valid_ann.jsonl", flickr("va", 6))
    for rel in (
        "annotations/en/test.jsonl",
        "annotations/de/test.jsonl",
        "annotations_machine-translate/de/test_gmt.jsonl",
    ):
        _jsonl(root / f"xFlickrCO/{rel}", flickr("te", 6))
