"""Loaders read every real IGLUE annotation file as published and find the documented counts;
the synthetic world's IGLUE-format sets load through the same code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iglue_data import REAL_IGLUE, needs_real

from mvlp_core.eval import data_marvl, data_retrieval, data_xgqa, data_xvnli
from mvlp_core.eval.images import ImageRoots
from mvlp_core.eval.io import AnnotationError
from mvlp_core.eval.tasks import IGLUE_LANGUAGES, Layout
from mvlp_core.eval.wit_urls import url_rows, write_url_list

R = REAL_IGLUE


@needs_real
@pytest.mark.parametrize("lang", ("en",) + IGLUE_LANGUAGES["xvnli"])
def test_xvnli_test_1164_pairs_with_dash_labels_kept(lang: str) -> None:
    items = data_xvnli.load(R / f"XVNLI/annotations/{lang}/test.jsonl")
    assert len(items) == 1164
    assert sum(i.label is None for i in items) == 14  # "-": kept, never correct (VOLTA)
    assert {i.label for i in items} == {None, "entailment", "neutral", "contradiction"}
    en = data_xvnli.load(R / "XVNLI/annotations/en/test.jsonl")
    assert [i.id for i in items] == [i.id for i in en]  # same pairIDs across languages
    assert items[0].id == "759822302.jpg#2r1c" and items[0].image == "759822302"


@needs_real
@pytest.mark.parametrize("lang", ("en",) + IGLUE_LANGUAGES["xvnli"])
def test_xvnli_few_shot_and_translate_test(lang: str) -> None:
    # few-shot sizes count premise images; each image has ~3.5 hypotheses
    sizes = {1: 3, 5: 18, 10: 39, 20: 75, 25: 90, 48: 168}
    for shots, n in sizes.items():
        items = data_xvnli.load(R / f"XVNLI/annotations/{lang}/train_{shots}.jsonl")
        assert len(items) == n and len({i.image for i in items}) == shots
    if lang != "en":
        mt = data_xvnli.load(Layout(R).test("xvnli", lang, "translate-test").path)
        assert len(mt) == 1164


@needs_real
@pytest.mark.parametrize("lang", IGLUE_LANGUAGES["xgqa"] + ("en",))
def test_xgqa_few_shot_files(lang: str) -> None:
    base = R / f"xGQA/annotations/few_shot/{lang}"
    counts = {"dev": (1422, 50), "train_1": (27, 1), "train_5": (155, 5), "train_48": (1490, 48)}
    for name, (questions, images) in counts.items():
        items = data_xgqa.load(base / f"{name}.json")
        assert len(items) == questions and len({i.image for i in items}) == images
    dev_en = {i.id: i.answer for i in data_xgqa.load(R / "xGQA/annotations/few_shot/en/dev.json")}
    dev = data_xgqa.load(base / "dev.json")
    assert {i.id: i.answer for i in dev} == dev_en  # answers stay English in every language


@needs_real
def test_gqa_testdev_and_answer_vocab() -> None:
    balanced = data_xgqa.load(R / "gqa/annotations/testdev_balanced_questions.json")
    assert len(balanced) == 1944 and len({i.image for i in balanced}) == 398
    lxmert = data_xgqa.load(R / "gqa/annotations/testdev.json")
    assert len(lxmert) == 12578
    vocab = data_xgqa.load_answer_vocab(R / "gqa/annotations/trainval_label2ans.json")
    assert len(vocab) == 1842
    assert data_xgqa.load_answer_vocab(R / "gqa/annotations/trainval_ans2label.json") == vocab


@needs_real
def test_marvl_zero_shot_counts_and_translate_test() -> None:
    sizes = {"id": 1128, "sw": 1108, "ta": 1242, "tr": 1180, "zh": 1012}
    for lang, n in sizes.items():
        items = data_marvl.load(R / f"marvl/zero_shot/annotations/marvl-{lang}.jsonl")
        assert len(items) == n and {i.lang for i in items} == {lang}
        assert items[0].concept and items[0].left.endswith(".jpg") and items[0].right.endswith(".jpg")
        mt = data_marvl.load(Layout(R).test("marvl", lang, "translate-test").path)
        assert [(i.id, i.label) for i in mt] == [(i.id, i.label) for i in items]
    assert sum(i.label for i in data_marvl.load(R / "marvl/zero_shot/annotations/marvl-id.jsonl")) == 564


@needs_real
def test_marvl_few_shot_and_nlvr2() -> None:
    for lang in ("id", "tr", "zh"):
        for shots, n in {"1": 4, "2": 8, "4": 16, "10": 40, "10x2": 80}.items():
            items = data_marvl.load(R / f"marvl/few_shot/annotations/marvl-{lang}_train{shots}.jsonl")
            assert len(items) == n
            assert "/" in items[0].left  # few-shot rows carry the concept folder
    nlvr2 = data_marvl.load(R / "nlvr2/annotations/dev.jsonl")
    assert len(nlvr2) == 6982 and sum(i.label for i in nlvr2) == 3551
    assert nlvr2[0].left == "dev-850-0-img0" and nlvr2[0].right == "dev-850-0-img1"


@needs_real
@pytest.mark.parametrize("lang", ("en",) + IGLUE_LANGUAGES["xflickrco"])
def test_xflickrco_2000_captions_1000_flickr_1000_coco(lang: str) -> None:
    s = data_retrieval.load(R / f"xFlickrCO/annotations/{lang}/test.jsonl")
    assert len(s.captions) == 2000 and len(s.images) == 2000
    coco = [im for im in s.images if im.ref.startswith("COCO_val2014_")]
    assert len(coco) == 1000 and all(im.key.isdigit() for im in coco)
    assert s.caption_image == list(range(2000))
    if lang != "en":
        mt = data_retrieval.load(Layout(R).test("xflickrco", lang, "translate-test").path)
        assert [im.key for im in mt.images] == [im.key for im in s.images]
        shots = {"1": 1, "5": 5, "10": 10, "25": 25, "50": 50, "100": 100}
        for name, n in shots.items():
            assert (
                len(data_retrieval.load(R / f"xFlickrCO/annotations/{lang}/train_{name}.jsonl").images) == n
            )


@needs_real
def test_flickr30k_five_captions_per_image() -> None:
    for split, n in (("test", 1000), ("valid", 1014)):
        s = data_retrieval.load(R / f"flickr30k/annotations/{split}_ann.jsonl")
        assert len(s.images) == n and len(s.captions) == 5 * n
        assert s.caption_image[:6] == [0, 0, 0, 0, 0, 1]


# (captions, images): images keyed by wit_ix, as VOLTA keys them; image_idx is shared by
# unrelated pictures (ar: 753 distinct image_idx over 792 pictures)
WIT = {
    "ar": (890, 792),
    "bg": (860, 806),
    "da": (891, 814),
    "el": (570, 541),
    "en": (1000, 685),
    "et": (874, 780),
    "id": (901, 854),
    "ja": (1000, 842),
    "ko": (931, 889),
    "tr": (721, 681),
    "vi": (946, 869),
}


@needs_real
@pytest.mark.parametrize("lang", sorted(WIT))
def test_wit_test_sets(lang: str) -> None:
    captions, images = WIT[lang]
    s = data_retrieval.load(R / f"wit/annotations/test_{lang}.jsonl")
    assert (len(s.captions), len(s.images)) == (captions, images)
    assert all(ref.ref.startswith("http") for ref in s.images)
    rows = [json.loads(line) for line in (R / f"wit/annotations/test_{lang}.jsonl").open(encoding="utf-8")]
    for row, image in zip(rows, s.caption_image):  # each caption's gold image is its own picture
        assert s.images[image].ref == row["image_url"] and s.images[image].key == row["wit_ix"]


@needs_real
def test_wit_val_and_url_list(tmp_path: Path) -> None:
    val = data_retrieval.load(R / "wit/annotations/val_en.jsonl")
    assert len(val.captions) == 4632  # last line has no newline: still read
    rows = url_rows([R / "wit/annotations/test_ar.jsonl"])
    assert len(rows) == 792 and rows[0]["url"].endswith("/BNRATHAU.jpg") and rows[0]["caption"]
    assert write_url_list([R / "wit/annotations/test_ar.jsonl"], tmp_path / "u.tsv") == 792
    assert (tmp_path / "u.tsv").read_text(encoding="utf-8").splitlines()[0] == "url\tcaption"


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"gold_label": "neutral", "sentence2": "x"}\n', encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"test.jsonl:1: missing field\(s\).*Flikr30kID"):
        data_xvnli.load(bad)
    with pytest.raises(AnnotationError, match="file not found"):
        data_xvnli.load(tmp_path / "nope.jsonl")


def test_image_roots_resolve_each_layout(tmp_path: Path) -> None:
    for rel in (
        "f/123.jpg",
        "c/COCO_val2014_000000000042.jpg",
        "g/n1.jpg",
        "m/id/images/39-Panci/39-0.jpg",
        "m/id/images/39-Panci/39-n-5.jpg",
        "n/dev/dev-850-0-img0.png",
        "w/BNRATHAU.jpg",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    roots = ImageRoots(
        {
            "flickr30k": tmp_path / "f",
            "coco": tmp_path / "c",
            "gqa": tmp_path / "g",
            "marvl": tmp_path / "m",
            "nlvr2": tmp_path / "n",
            "wit": tmp_path / "w",
        }
    )
    assert roots.flickr_id("123") and roots.flickr_or_coco("123.jpg")
    assert roots.flickr_or_coco("COCO_val2014_000000000042.jpg")
    assert roots.gqa("n1") and roots.marvl("id", "39-Panci", "39-0.jpg")
    assert roots.marvl("id", "39-Panci", "39-Panci/39-n-5.jpg")
    assert roots.nlvr2("dev-850-0-img0")
    assert roots.wit("https://upload.wikimedia.org/wikipedia/commons/6/61/BNRATHAU.jpg")
    assert roots.flickr_id("999") is None and roots.gqa("missing") is None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvlp_core.synth import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(out, 12, 0)
    return out / "iglue"


def test_synthetic_sets_load_through_the_same_code(world: Path) -> None:
    lay = Layout(world)
    roots = ImageRoots({k: world / "images" / k for k in ("flickr30k", "gqa", "marvl", "nlvr2", "wit")})
    for lang in ("en", "de", "zh"):
        nli = data_xvnli.load(lay.test("xvnli", lang).path)
        assert len(nli) == 48 * 3 and all(roots.flickr_id(i.image) for i in nli)
        qa = data_xgqa.load(lay.test("xgqa", lang).path)
        assert qa and all(roots.gqa(i.image) for i in qa)
        ret = data_retrieval.load(lay.test("xflickrco", lang).path)
        assert len(ret.images) == 48 and all(roots.flickr_or_coco(im.ref) for im in ret.images)
        wit = data_retrieval.load(lay.test("wit", lang).path)
        assert len(wit.images) == 48 and all(roots.wit(im.ref) for im in wit.images)
    pairs = data_marvl.load(lay.test("marvl", "de").path)
    assert len(pairs) == 144 and all(roots.marvl("de", p.concept, p.left) for p in pairs)
    nlvr2 = data_marvl.load(lay.train("marvl"))
    assert len(nlvr2) == 960 and all(roots.nlvr2(p.left) and roots.nlvr2(p.right) for p in nlvr2)
    assert len(data_marvl.load(lay.dev("marvl"))) == 144
    assert len(data_xvnli.load(lay.train("xvnli"))) == 240 * 3
    assert data_xgqa.load(lay.train("xgqa")) and data_retrieval.load(lay.train("xflickrco")).captions
    assert len(data_xvnli.load(lay.test("xvnli", "de", "translate-test").path)) == 48 * 3
