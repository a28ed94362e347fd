"""The synthetic world: deterministic, captions true of their images, gold links exact, IGLUE
files shaped like the real ones."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mvlp_core.synth import write_world
from mvlp_core.synth.grammar import (
    LANGS,
    SHAPES,
    TARGET_LANGS,
    Obj,
    Scene,
    gold_links,
    random_scene,
    realise,
)
from mvlp_core.synth.iglue import ANSWERS, image_paths, nli_label
from mvlp_core.synth.images import BACKGROUND, PALETTE, render_jpeg

REAL_IGLUE = Path(__file__).resolve().parents[3] / "shared" / "data" / "iglue"
SAMPLES = 60
PREFIX = "http://images.synthetic.mvlp/"


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world")
    return out, write_world(out, SAMPLES, seed=7)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def good_rows(root: Path) -> list[list[str]]:
    lines = (root / "urls.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines[1 : SAMPLES + 1]]


# -- determinism ----------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(world, tmp_path):
    root, info = world
    again = write_world(tmp_path / "again", SAMPLES, seed=7)
    assert again == info
    assert tree_hashes(tmp_path / "again") == tree_hashes(root)
    write_world(tmp_path / "other", SAMPLES, seed=8)
    other, ours = tree_hashes(tmp_path / "other"), tree_hashes(root)
    for name in (
        "urls.tsv",
        "translations.tsv",
        "gold_alignments.jsonl",
        "images/000000.jpg",
        "iglue/XVNLI/annotations/en/test.jsonl",
        "iglue/images/gqa/n000000.jpg",
        "text/wikimatrix.en-de.tsv.gz",
        "text/mono.ja.txt",
    ):
        assert other[name] != ours[name], name


# -- url list -------------------------------------------------------------------------------------


def test_urls_tsv_has_every_good_row_then_the_bad_ones(world):
    root, info = world
    lines = (root / "urls.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "caption\turl"
    rows = [line.split("\t") for line in lines[1:]]
    good, bad = rows[:SAMPLES], rows[SAMPLES:]
    assert [url for _, url in good] == [f"{PREFIX}images/{i:06d}.jpg" for i in range(SAMPLES)]
    assert all(caption for caption, _ in good)
    assert all((root / "images" / f"{i:06d}.jpg").is_file() for i in range(SAMPLES))
    assert [url for _, url in bad[:6]] == [
        f"{PREFIX}bad/404.jpg",
        f"{PREFIX}bad/500.jpg",
        f"{PREFIX}bad/corrupt.jpg",
        f"{PREFIX}bad/not-an-image.jpg",
        f"{PREFIX}bad/slow.jpg",
        "ftp://images.synthetic.mvlp/images/000000.jpg",
    ]
    assert bad[6][0] == "" and bad[6][1] not in {url for _, url in good}
    assert bad[7] in good
    assert info["counts"]["good"] == SAMPLES
    assert info["counts"]["rows"] == len(rows) == SAMPLES + 8
    assert info["counts"]["bad"] == {
        "http_404": 1,
        "http_500": 1,
        "corrupt_image": 1,
        "not_an_image": 1,
        "slow": 1,
        "bad_scheme": 1,
        "empty_caption": 1,
        "duplicate": 1,
    }
    assert json.loads((root / "world.json").read_text()) == info


# -- captions agree with images -------------------------------------------------------------------

CAPTION_RE = re.compile(
    r"^(a|two|three) (?:(small|big) )?(\w+) (\w+?)(?:e?s)?"
    r"(?: (above|below|to the left of|to the right of) a (\w+) (\w+))?$"
)


def colour_map(path: Path) -> np.ndarray:
    """Each pixel's nearest palette entry: -1 background, else an index into PALETTE."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int32)
    centres = np.array([BACKGROUND, *PALETTE.values()], dtype=np.int32)
    nearest = ((pixels[:, :, None, :] - centres[None, None]) ** 2).sum(-1).argmin(-1)
    return nearest - 1


def test_caption_colours_and_relations_match_the_pixels(world):
    root, _ = world
    names = list(PALETTE)
    for row, (caption, _) in enumerate(good_rows(root)):
        match = CAPTION_RE.match(caption)
        assert match, caption
        _, _, colour, _, relation, other_colour, _ = match.groups()
        labels = colour_map(root / "images" / f"{row:06d}.jpg")
        counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(names))
        assert names[int(counts.argmax())] in {colour, other_colour}, caption
        if relation is None:
            assert counts[names.index(colour)] > 0.9 * counts.sum(), caption
        elif colour != other_colour:
            first, second = (np.argwhere(labels == names.index(c)).mean(0) for c in (colour, other_colour))
            dy, dx = first - second
            expected = {
                "above": dy < -20,
                "below": dy > 20,
                "to the left of": dx < -20,
                "to the right of": dx > 20,
            }
            assert expected[relation], (caption, dy, dx)


def test_size_words_are_separate_bands_of_pixel_area(tmp_path):
    rng, path = random.Random(0), tmp_path / "x.jpg"
    for shape in SHAPES:
        areas: dict[str, list[int]] = {"small": [], "medium": [], "big": []}
        for size, found in areas.items():
            for colour in PALETTE:
                path.write_bytes(render_jpeg(Scene("single", (Obj(shape, colour, size),)), rng))
                labels = colour_map(path)
                assert (labels == list(PALETTE).index(colour)).sum() > 0.9 * (labels >= 0).sum()
                found.append(int((labels >= 0).sum()))
        assert max(areas["small"]) < min(areas["medium"]), shape
        assert max(areas["medium"]) < min(areas["big"]), shape


# -- translations and gold alignments -------------------------------------------------------------


def test_translations_tsv_has_one_sorted_row_per_distinct_caption(world):
    root, info = world
    lines = (root / "translations.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "en\tde\tfr\tcs\tja\tzh"
    rows = [line.split("\t") for line in lines[1:]]
    english = [row[0] for row in rows]
    assert english == sorted({caption for caption, _ in good_rows(root)})
    assert len(rows) == info["counts"]["distinct_captions"]
    assert all(len(row) == 6 and all(row) for row in rows)
    assert all(" " not in row[4] and " " not in row[5] for row in rows)


EN_BASE = {
    "circles": "circle",
    "squares": "square",
    "triangles": "triangle",
    "stars": "star",
    "crosses": "cross",
    "diamonds": "diamond",
}
COLOURS_SIZES = ("red", "green", "blue", "yellow", "black", "purple", "small", "big")
SHAPE_WORDS = ("circle", "square", "triangle", "star", "cross", "diamond")
RELATION_WORDS = ("above", "below", "left", "right")


def lexicon(colours_sizes: str, shapes: str, numbers: str, relations: str, **extra: str) -> dict:
    """English word -> what its translation starts with, written apart from the grammar."""
    table = dict(zip(COLOURS_SIZES, colours_sizes.split()))
    table |= dict(zip(SHAPE_WORDS, shapes.split()))
    table |= dict(zip(("two", "three"), numbers.split()))
    table |= dict(zip(RELATION_WORDS, relations.split()))
    return table | extra


STARTS = {
    "de": lexicon(
        "rot grün blau gelb schwarz violett klein groß",
        "Kreis Quadrat Dreieck Stern Kreuz Raute",
        "zwei drei",
        "über unter links rechts",
        a="ein",
        of="von",
    ),
    "fr": lexicon(
        "rouge vert bleu jaune noir violet petit grand",
        "cercle carré triangle étoile croix losange",
        "deux trois",
        "au-dessus au-dessous gauche droite",
        a="un",
        to="à",
        of="d'",
    ),
    "cs": lexicon(
        "červen zelen modr žlut čern fialov mal velk",
        "kruh čtver trojúhelník hvězd kříž kosočtver",
        "dv tři",
        "nad pod vlevo vpravo",
        of="od",
    ),
    "ja": lexicon(
        "赤 緑 青 黄色 黒 紫 小さ 大き", "円 正方形 三角形 星 十字 ひし形", "二つ 三つ", "上 下 左 右"
    ),
    "zh": lexicon("红 绿 蓝 黄 黑 紫 小 大", "圆 正方形 三角形 星 十字 菱形", "两 三", "上 下 左 右", a="一"),
}
CONTENT = {*COLOURS_SIZES, *SHAPE_WORDS, *RELATION_WORDS, "two", "three"}


def check_alignment(record: dict) -> None:
    en_words = [record["en"][a:b] for a, b in record["en_spans"]]
    xx_words = [record["xx"][a:b] for a, b in record["xx_spans"]]
    assert en_words == record["en"].split()
    for spans, text in ((record["en_spans"], record["en"]), (record["xx_spans"], record["xx"])):
        assert all(0 <= a < b <= len(text) for a, b in spans)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
        assert "".join(text[a:b] for a, b in spans) == text.replace(" ", "")
    if record["lang"] in ("ja", "zh"):
        assert " " not in record["xx"]
    starts = STARTS[record["lang"]]
    linked = set()
    for i, j in record["links"]:
        word = EN_BASE.get(en_words[i], en_words[i])
        assert word in starts, (record, word)
        assert xx_words[j].startswith(starts[word]), (record["xx"], en_words[i], xx_words[j])
        linked.add(word)
    assert {EN_BASE.get(w, w) for w in en_words} & CONTENT <= linked, (record, linked)


def test_gold_alignments_link_translations_of_each_other(world):
    root, info = world
    records = read_jsonl(root / "gold_alignments.jsonl")
    assert len(records) == 5 * info["counts"]["distinct_captions"] == info["counts"]["alignments"]
    lines = (root / "translations.tsv").read_text(encoding="utf-8").splitlines()[1:]
    translations = {line.split("\t")[0]: line.split("\t") for line in lines}
    for record in records:
        assert record["xx"] == translations[record["en"]][LANGS.index(record["lang"])]
        check_alignment(record)


def test_every_scene_kind_aligns_in_every_language():
    rng = random.Random(3)
    for _ in range(400):
        scene = random_scene(rng)
        en = realise(scene, "en")
        for lang in TARGET_LANGS:
            xx = realise(scene, lang)
            check_alignment(
                {
                    "en": en.text,
                    "lang": lang,
                    "xx": xx.text,
                    "en_spans": en.spans,
                    "xx_spans": xx.spans,
                    "links": gold_links(en, xx),
                }
            )


def test_grammar_inflects_each_language():
    rel = Scene("relation", (Obj("star", "red"), Obj("diamond", "blue")), "left")
    assert [realise(rel, lang).text for lang in LANGS] == [
        "a red star to the left of a blue diamond",
        "ein roter Stern links von einer blauen Raute",
        "une étoile rouge à gauche d'un losange bleu",
        "červená hvězda vlevo od modrého kosočtverce",
        "青いひし形の左の赤い星",
        "蓝色菱形的左边有一颗红色的星星",
    ]
    count = Scene("count", (Obj("square", "green"),) * 2)
    assert [realise(count, lang).text for lang in LANGS] == [
        "two green squares",
        "zwei grüne Quadrate",
        "deux carrés verts",
        "dva zelené čtverce",
        "二つの緑の正方形",
        "两个绿色的正方形",
    ]
    single = Scene("single", (Obj("cross", "purple", "small"),))
    assert [realise(single, lang).text for lang in LANGS] == [
        "a small purple cross",
        "ein kleines violettes Kreuz",
        "une petite croix violette",
        "malý fialový kříž",
        "小さな紫の十字",
        "一个紫色的小十字",
    ]


# -- IGLUE ----------------------------------------------------------------------------------------

STRUCTURED = {"annotator_info", "groups", "types", "annotations"}  # nested dicts with fixed keys


def shape_of(record: dict) -> dict:
    """Field names with value types; nested fixed-key dicts by their key sets."""
    return {k: sorted(v) if k in STRUCTURED else type(v).__name__ for k, v in record.items()}


def first_record(path: Path):
    if path.suffix == ".jsonl":
        return json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    data = json.loads(path.read_text(encoding="utf-8"))
    return next(iter(data.values())) if isinstance(data, dict) else data[0]


# (our files as a glob, the real file with the same format)
FORMATS = [
    ("XVNLI/annotations/*/test.jsonl", "XVNLI/annotations/en/test.jsonl"),
    ("XVNLI/annotations/*/train*.jsonl", "XVNLI/annotations/fr/train_10.jsonl"),
    ("XVNLI/annotations/en/dev.jsonl", "XVNLI/annotations/en/test.jsonl"),
    ("XVNLI/annotations_machine-translate/*/test.jsonl", "XVNLI/annotations_machine-translate/fr/test.jsonl"),
    ("xGQA/annotations/few_shot/*/*.json", "xGQA/annotations/few_shot/de/dev.json"),
    ("gqa/annotations/*_balanced_questions.json", "gqa/annotations/testdev_balanced_questions.json"),
    ("gqa/annotations/t*[nv].json", "gqa/annotations/testdev.json"),
    ("marvl/zero_shot/annotations/marvl-*.jsonl", "marvl/zero_shot/annotations/marvl-zh.jsonl"),
    (
        "marvl/zero_shot/annotations_machine-translate/marvl-*_gmt.jsonl",
        "marvl/zero_shot/annotations_machine-translate/marvl-zh_gmt.jsonl",
    ),
    ("nlvr2/annotations/*.jsonl", "nlvr2/annotations/dev.jsonl"),
    ("xFlickrCO/annotations/*/test.jsonl", "xFlickrCO/annotations/de/test.jsonl"),
    (
        "xFlickrCO/annotations_machine-translate/*/test_gmt.jsonl",
        "xFlickrCO/annotations_machine-translate/de/test_gmt.jsonl",
    ),
    ("flickr30k/annotations/*_ann.jsonl", "flickr30k/annotations/test_ann.jsonl"),
    ("wit/annotations/test_*.jsonl", "wit/annotations/test_en.jsonl"),
    ("wit/annotations/train_en.jsonl", "wit/annotations/val_en.jsonl"),
    ("wit/annotations/val_en.jsonl", "wit/annotations/val_en.jsonl"),
]


@pytest.mark.skipif(not REAL_IGLUE.is_dir(), reason="real IGLUE annotations not available")
@pytest.mark.parametrize(("ours", "real"), FORMATS)
def test_iglue_files_have_the_real_field_names_and_types(world, ours, real):
    expected = shape_of(first_record(REAL_IGLUE / real))
    paths = sorted((world[0] / "iglue").glob(ours))
    assert paths
    for path in paths:
        assert shape_of(first_record(path)) == expected, path


def test_xgqa_questions_share_ids_and_english_answers_across_languages(world):
    gqa = world[0] / "iglue" / "gqa" / "annotations"
    ans2label = json.loads((gqa / "trainval_ans2label.json").read_text())
    label2ans = json.loads((gqa / "trainval_label2ans.json").read_text())
    assert label2ans == ANSWERS and all(ans2label[a] == i for i, a in enumerate(label2ans))
    english = json.loads((gqa / "testdev_balanced_questions.json").read_text())
    for lang in LANGS:
        path = world[0] / f"iglue/xGQA/annotations/few_shot/{lang}/dev.json"
        questions = json.loads(path.read_text())
        assert questions.keys() == english.keys()
        for qid, q in questions.items():
            assert q["answer"] in ans2label and q["answer"] == english[qid]["answer"]
            assert re.fullmatch(r"\d{9}", qid) and re.fullmatch(r"n\d{6}", q["imageId"])


def test_xvnli_hypotheses_meet_each_label_once_so_the_text_alone_says_nothing(world):
    root = world[0] / "iglue" / "XVNLI" / "annotations"
    english = read_jsonl(root / "en" / "test.jsonl")
    by_hypothesis: dict[str, list[str]] = {}
    for row in english:
        by_hypothesis.setdefault(row["sentence2"], []).append(row["gold_label"])
        assert row["pairID"] == f"{row['captionID']}r1{row['gold_label'][0]}"
        assert {"small", "big"} & set(row["sentence2"].split())
    assert len({r["captionID"] for r in english}) == len(english)  # one premise image per pair
    for labels in by_hypothesis.values():  # a hypothesis drawn twice holds each label twice
        n = len(labels) // 3
        assert Counter(labels) == {"entailment": n, "neutral": n, "contradiction": n}, labels
    for lang in TARGET_LANGS:
        rows = read_jsonl(root / lang / "test.jsonl")
        assert [(r["pairID"], r["gold_label"]) for r in rows] == [
            (r["pairID"], r["gold_label"]) for r in english
        ]
        assert all(r["sentence1"] != e["sentence1"] for r, e in zip(rows, english))
    assert len(read_jsonl(root / "en" / "train_5.jsonl")) == 15


def test_nli_label_reads_hypotheses_existentially_with_vague_sizes():
    red_circle, blue_square = Obj("circle", "red"), Obj("square", "blue")
    above = Scene("relation", (red_circle, blue_square), "above")
    below = Scene("relation", (blue_square, red_circle), "below")
    assert nli_label(above, below) == "entailment"
    swapped = Scene("relation", (red_circle, blue_square), "below")
    assert nli_label(above, swapped) == "contradiction"
    assert nli_label(above, Scene("single", (red_circle,))) == "entailment"
    assert nli_label(above, Scene("single", (Obj("circle", "red", "small"),))) == "neutral"
    assert nli_label(above, Scene("single", (Obj("circle", "green"),))) == "contradiction"
    small = Scene("single", (Obj("star", "black", "small"),))
    assert nli_label(small, Scene("single", (Obj("star", "black", "big"),))) == "contradiction"
    two = Scene("count", (red_circle,) * 2)
    assert nli_label(two, Scene("count", (red_circle,) * 3)) == "contradiction"
    assert nli_label(two, two) == "entailment"


TASK_FILES = [
    ("xvnli", "XVNLI/annotations/*/*.jsonl"),
    ("xgqa", "xGQA/annotations/few_shot/*/*.json"),
    ("xgqa", "gqa/annotations/t*[nv].json"),
    ("marvl", "marvl/zero_shot/*/*.jsonl"),
    ("nlvr2", "nlvr2/annotations/*.jsonl"),
    ("xflickrco", "xFlickrCO/annotations/*/*.jsonl"),
    ("flickr30k", "flickr30k/annotations/*.jsonl"),
    ("wit", "wit/annotations/*.jsonl"),
]


def test_marvl_is_balanced_and_every_record_points_at_rendered_images(world):
    root = world[0]
    for lang in TARGET_LANGS:
        rows = read_jsonl(root / f"iglue/marvl/zero_shot/annotations/marvl-{lang}.jsonl")
        assert [r["id"] for r in rows] == [f"{lang}-{i}" for i in range(len(rows))]
        assert sum(r["label"] for r in rows) * 2 == len(rows)
        assert all(isinstance(r["label"], bool) and r["language"] == lang for r in rows)
    seen = 0
    for task, pattern in TASK_FILES:
        files = sorted((root / "iglue").glob(pattern))
        assert files, pattern
        for path in files:
            data = read_jsonl(path) if path.suffix == ".jsonl" else json.loads(path.read_text())
            lang = path.stem.split("-")[1].split("_")[0] if task == "marvl" else "en"
            for record in data.values() if isinstance(data, dict) else data:
                for rel in image_paths(task, record, lang):
                    assert (root / rel).is_file(), (path, rel)
                    seen += 1
    assert seen > 1000
    assert len(list((root / "iglue" / "images").rglob("*.jpg"))) == world[1]["iglue"]["images"]


# -- text corpora ---------------------------------------------------------------------------------


def test_text_corpora_are_translations_that_are_not_captions(world):
    root, info = world
    captions = {c for c, _ in good_rows(root)}
    for xx in TARGET_LANGS:
        counts = info["text"]["parallel"][f"en-{xx}"]
        lines = gzip.decompress((root / f"text/wikimatrix.en-{xx}.tsv.gz").read_bytes()).split(b"\n")
        assert lines[-1] == b"" and len(lines) - 1 == counts["lines"]
        assert counts["lines"] == counts["good"] + sum(counts["planted"].values())
        rows = [line.decode("utf-8", "replace").split("\t") for line in lines[:-1]]
        scored = [float(r[0]) for r in rows if len(r) == 3 and r[0] != "n/a"]
        assert scored[-3:] == sorted(scored[-3:], reverse=True) and max(scored[-3:]) < 1.04
        good = [r for r in rows if len(r) == 3 and r[0] != "n/a" and float(r[0]) >= 1.04 and r[1] != r[2]]
        assert len(good) > counts["good"]  # the planted length/dup/encoding lines are among these
        assert not {r[1] for r in good} & captions
        # statements about each side of an image pair: what carries MaRVL's side words across languages
        sides = Counter(
            r[1].split()[1] for r in good if r[1].startswith(("The left image", "The right image"))
        )
        assert min(sides["left"], sides["right"]) >= 8, (xx, sides)
    for lang in LANGS:
        counts = info["text"]["mono"][lang]
        data = (root / f"text/mono.{lang}.txt").read_bytes()
        eol = b"\r\n" if lang == "cs" else b"\n"
        assert data.count(eol) == counts["lines"] == counts["good"] + sum(counts["planted"].values())
        assert data.startswith(b"\xef\xbb\xbf") == (lang == "fr")
    assert info["text"]["mono"]["en"]["good"] > info["text"]["mono"]["zh"]["good"]  # skewed, as CC-100
