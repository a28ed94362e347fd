"""IGLUE-format evaluation sets drawn from the synthetic world, in the real files' exact formats.

The real annotations (``/work/shared/data/iglue``) fix field names, id conventions, file names and
layout; these sets copy them so the same loaders read both. Labels are computed from scenes, never
guessed, and images are rendered into ``iglue/images/``. The world speaks en, de, fr, cs, ja, zh,
so each task uses those in place of IGLUE's own languages:

- XVNLI: ``XVNLI/annotations/{en,de,fr,cs,ja,zh}/test.jsonl`` and
  ``train_{1,5,10,20,25,48}.jsonl`` (few-shot, counted in hypotheses); English
  ``en/train.jsonl`` and ``en/dev.jsonl`` to fine-tune; ``annotations_machine-translate/{lang}/
  test.jsonl`` holds the gold English (a perfect translate-test).
- xGQA: ``xGQA/annotations/few_shot/{en,de,fr,cs,ja,zh}/{test,dev,train_1,train_5,train_48}.json``
  (test and dev hold the same questions here); ``gqa/annotations/testdev_balanced_questions.json``
  is the English of ``few_shot/*/dev.json``,
  ``train_balanced_questions.json`` the English training set, ``testdev.json``/``train.json``
  the same in the preprocessed (LXMERT) form, ``trainval_{ans2label,label2ans}.json`` the answer
  vocabulary. Answers and fullAnswers are English in every language, as in xGQA. Translate-test:
  ``annotations_machine-translate/few_shot/{lang}/test.json``, the gold English.
- MaRVL: ``marvl/zero_shot/annotations/marvl-{de,fr,cs,ja,zh}.jsonl`` (+ ``_gmt`` English in
  ``annotations_machine-translate``); English ``nlvr2/annotations/{train,dev}.jsonl`` to fine-tune
  and ``test.jsonl`` (identifiers ``test1-...``, as NLVR2's public test1) to test.
- xFlickr&CO: ``xFlickrCO/annotations/{en,de,fr,cs,ja,zh}/test.jsonl`` (+ ``test_gmt.jsonl``);
  English ``flickr30k/annotations/{train,valid,test}_ann.jsonl``; test ids are shared.
- WIT: ``wit/annotations/test_{en,de,fr,cs,ja,zh}.jsonl`` over one image pool (+ the gold English
  as ``annotations_machine-translate/test_{lang}_gmt.jsonl``); English ``train_en.jsonl``/
  ``val_en.jsonl`` in the real val format.

Images: ``iglue/images/flickr30k/`` (XVNLI, xFlickr&CO, flickr30k), ``gqa/``, ``marvl/{lang}/``,
``nlvr2/`` and ``wit/`` (the last two referenced by URL under ``url_prefix``); ``image_paths``
maps any record to its files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvlp_core.synth.grammar import (
    COLOURS,
    CONVERSE,
    COUNTS,
    LANGS,
    SHAPES,
    SIZES,
    TARGET_LANGS,
    Obj,
    Scene,
    caption,
    language,
    random_scene,
)
from mvlp_core.synth.images import render_jpeg

TEST_ITEMS = 48  # images per test split (MaRVL/NLVR2: image pairs)
TRAIN_ITEMS = 240  # images (pairs) per English training split
# NLVR2 pairs: a two-image statement (is it about the left or the right image? does that image fit
# it?) takes a tiny model far more examples than one image and a hypothesis
NLVR2_TRAIN_ITEMS = 960
# MaRVL and NLVR2 dev pairs: one item is one binary answer, so 48 would leave 7 points of noise
PAIR_TEST_ITEMS = 144
XVNLI_SHOTS = (1, 5, 10, 20, 25, 48)
XGQA_SHOTS = (1, 5, 48)
QUESTIONS_PER_IMAGE = 4
ANSWERS = sorted(("yes", "no") + COLOURS + SHAPES)
_REL_WORDS = {"above": "above", "below": "below", "left": "to the left of", "right": "to the right of"}

Record = dict[str, Any]


# -- semantics ------------------------------------------------------------------------------------


def nli_label(image: Scene, hypothesis: Scene) -> str:
    """XVNLI label of a caption-shaped hypothesis about an image's scene.

    Existential reading ("a red circle": there is one); counts are exact; a relation holds as
    stated or as its converse. A size word on a medium object is neutral: medium is the borderline
    between small and big, where the vague word is neither true nor false.
    """
    if hypothesis.kind == "relation":
        same = image.kind == "relation" and image.canonical() == hypothesis.canonical()
        return "entailment" if same else "contradiction"
    want = hypothesis.objects[0]
    found = [o for o in image.objects if (o.shape, o.colour) == (want.shape, want.colour)]
    if hypothesis.kind == "count":
        return "entailment" if len(found) == hypothesis.count else "contradiction"
    if found and (want.size == "medium" or any(o.size == want.size for o in found)):
        return "entailment"
    if any(o.size == "medium" for o in found):
        return "neutral"
    return "contradiction"


def describes(description: Scene, scene: Scene) -> bool:
    """Whether a caption (as a scene) is the caption of ``scene``, up to converse relations."""
    return description.canonical() == scene.canonical()


def _perturbed(scene: Scene, rng: random.Random) -> Scene:
    """A different scene of the same kind: one colour, shape, count, size or relation changed."""
    i = rng.randrange(scene.count) if scene.kind == "relation" else 0
    obj = scene.objects[i]
    change = rng.choice(("colour", "shape", "other"))
    if change == "other" and scene.kind == "relation":
        return Scene("relation", scene.objects, CONVERSE[scene.relation])
    if change == "other" and scene.kind == "count":
        return Scene("count", (obj,) * next(n for n in COUNTS if n != scene.count))
    if change == "colour":
        obj = Obj(obj.shape, rng.choice([c for c in COLOURS if c != obj.colour]), obj.size)
    elif change == "shape":
        taken = {o.shape for o in scene.objects}
        obj = Obj(rng.choice([s for s in SHAPES if s not in taken]), obj.colour, obj.size)
    else:
        obj = Obj(obj.shape, obj.colour, rng.choice([s for s in SIZES if s != obj.size]))
    if scene.kind == "count":
        return Scene("count", (obj,) * scene.count)
    objects = list(scene.objects)
    objects[i] = obj
    return Scene(scene.kind, tuple(objects), scene.relation)


# -- writing --------------------------------------------------------------------------------------


class _Writer:
    """Renders images and writes annotation files under ``world/iglue``, counting both."""

    def __init__(self, world: Path, rng: random.Random, url_prefix: str) -> None:
        self.root, self.rng, self.url_prefix = world / "iglue", rng, url_prefix
        self.counts: dict[str, int] = {}
        self.images = 0
        self._next: dict[str, int] = {}

    def image(self, folder: str, scene: Scene, name: str | None = None) -> str:
        """Render ``scene`` into ``images/folder``; return its stem (a fresh id unless named)."""
        if name is None:
            n = self._next.get(folder, 0)
            self._next[folder] = n + 1
            name = f"{100000000 + n}" if folder == "flickr30k" else f"n{n:06d}"  # Flickr / GQA ids
        path = self.root / "images" / folder / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render_jpeg(scene, self.rng))
        self.images += 1
        return name

    def url(self, folder: str, stem: str) -> str:
        return f"{self.url_prefix}iglue/images/{folder}/{stem}.jpg"

    def _write(self, rel: str, text: str, records: int) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.counts[rel] = records

    def jsonl(self, rel: str, rows: list[Record]) -> None:
        """One object per line, non-ASCII kept as is (like the real .jsonl files)."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        self._write(rel, text, len(rows))

    def json(self, rel: str, obj: dict | list, indent: int | None = None) -> None:
        """ASCII-escaped JSON (like the real GQA files); ``indent`` where the real file has one."""
        self._write(rel, json.dumps(obj, indent=indent), len(obj))

    def scenes(self, n: int, distinct: bool = False) -> list[Scene]:
        """``n`` random scenes; ``distinct`` keeps captions unique (retrieval)."""
        out: list[Scene] = []
        while len(out) < n:
            scene = random_scene(self.rng)
            if distinct and any(describes(scene, other) for other in out):
                continue
            out.append(scene)
        return out


def _premises(hypothesis: Obj, rng: random.Random) -> list[tuple[str, Scene]]:
    """(label, premise scene) for a sized hypothesis object, one premise per label: the object
    itself (entailment), at the borderline medium size (neutral), with its size, colour or shape
    changed (contradiction). Every hypothesis meets each label once, so the hypothesis alone says
    nothing about the label. (Three hypotheses written for one premise, as in SNLI-VE, let a model
    that never looks at the image score 79% on the world's earlier set.)"""
    change = rng.choice(("size", "colour", "shape"))
    h = hypothesis
    if change == "size":
        other = Obj(h.shape, h.colour, "small" if h.size == "big" else "big")
    elif change == "colour":
        other = Obj(h.shape, rng.choice([c for c in COLOURS if c != h.colour]), h.size)
    else:
        other = Obj(rng.choice([s for s in SHAPES if s != h.shape]), h.colour, h.size)
    premises = [Scene("single", (obj,)) for obj in (h, Obj(h.shape, h.colour, "medium"), other)]
    rng.shuffle(premises)
    return [(nli_label(premise, Scene("single", (h,))), premise) for premise in premises]


def _xvnli(w: _Writer) -> None:
    def items(n: int) -> list[tuple[Scene, list[tuple[str, str, Scene]]]]:
        out = []
        for _ in range(n):
            hypothesis = Obj(w.rng.choice(SHAPES), w.rng.choice(COLOURS), w.rng.choice(("small", "big")))
            premises = [
                (label, w.image("flickr30k", premise), premise)
                for label, premise in _premises(hypothesis, w.rng)
            ]
            out.append((Scene("single", (hypothesis,)), premises))
        return out

    def rows(data: list[tuple[Scene, list[tuple[str, str, Scene]]]], lang: str) -> list[Record]:
        return [
            {
                "gold_label": label,
                "sentence1": caption(premise, lang),
                "sentence2": caption(hypothesis, lang),
                "captionID": f"{fid}.jpg#0",
                "pairID": f"{fid}.jpg#0r1{label[0]}",
                "Flikr30kID": fid,
            }
            for hypothesis, premises in data
            for label, fid, premise in premises
        ]

    test, few = items(TEST_ITEMS), items(max(XVNLI_SHOTS))
    for lang in LANGS:
        w.jsonl(f"XVNLI/annotations/{lang}/test.jsonl", rows(test, lang))
        for shots in XVNLI_SHOTS:
            w.jsonl(f"XVNLI/annotations/{lang}/train_{shots}.jsonl", rows(few[:shots], lang))
    for lang in TARGET_LANGS:
        w.jsonl(f"XVNLI/annotations_machine-translate/{lang}/test.jsonl", rows(test, "en"))
    w.jsonl("XVNLI/annotations/en/train.jsonl", rows(items(TRAIN_ITEMS), "en"))
    w.jsonl("XVNLI/annotations/en/dev.jsonl", rows(items(TEST_ITEMS), "en"))


class _Questions:
    """Every GQA-style question a scene answers, collected in ``out``.

    Each is {kind, args, answer, full, semantic, types, groups}: ``kind`` names the ``Language``
    method that words it (``colour`` -> ``colour_q``) and ``args`` are that method's arguments;
    the program and types follow GQA's conventions.
    """

    def __init__(self, scene: Scene, rng: random.Random) -> None:
        self.scene = scene
        self.out: list[Record] = []
        objs = scene.objects
        plural = scene.kind == "count"
        for i, o in enumerate(objs[:1] if plural else objs):
            self._about(i, o, plural)
        o = rng.choice(objs)
        absent = rng.choice(
            [(s, c) for s in SHAPES for c in COLOURS if all((p.shape, p.colour) != (s, c) for p in objs)]
        )
        self._exists(o.shape, o.colour, str(objs.index(o)))
        self._exists(*absent, "-")
        if scene.kind == "relation":
            a, b = objs
            self._relations(a, scene.relation, b)
            self._relations(b, CONVERSE[scene.relation], a)

    def _add(
        self,
        kind: str,
        args: tuple,
        answer: str,
        full: str,
        program: list[tuple[str, list[int], str]],
        types: tuple[str, str, str],
        groups: tuple[str | None, str],
    ) -> None:
        self.out.append(
            {
                "kind": kind,
                "args": args,
                "answer": answer,
                "full": full,
                "semantic": [
                    {"operation": op, "dependencies": deps, "argument": arg} for op, deps, arg in program
                ],
                "types": dict(zip(("detailed", "semantic", "structural"), types)),
                "groups": dict(zip(("global", "local"), groups)),
            }
        )

    def _about(self, i: int, o: Obj, plural: bool) -> None:
        name = f"{o.shape}s" if plural else o.shape
        full = f"The {name} {'are' if plural else 'is'} {o.colour}."
        self._add(
            "colour",
            (o.shape, plural),
            o.colour,
            full,
            [("select", [], f"{name} ({i})"), ("query", [0], "color")],
            ("directOf", "attr", "query"),
            ("color", f"10q-{o.shape}_color"),
        )
        if len({p.shape for p in self.scene.objects if p.colour == o.colour}) == 1:
            self._add(
                "shape",
                (o.colour,),
                o.shape,
                full,
                [("select", [], f"shape ({i})"), ("filter color", [0], o.colour), ("query", [1], "name")],
                ("categoryThat", "cat", "query"),
                ("shape", f"12q-shape_{o.colour}"),
            )

    def _exists(self, shape: str, colour: str, ref: str) -> None:
        answer = "no" if ref == "-" else "yes"
        full = (
            f"No, there is no {colour} {shape}." if answer == "no" else f"Yes, there is a {colour} {shape}."
        )
        self._add(
            "exist",
            (Obj(shape, colour),),
            answer,
            full,
            [("select", [], f"{shape} ({ref})"), ("filter color", [0], colour), ("exist", [1], "?")],
            ("existAttr", "obj", "verify"),
            (None, f"06existAttr-{colour}_{shape}"),
        )

    def _relations(self, x: Obj, rel: str, y: Obj) -> None:
        """Is X REL/CONVERSE(REL) Y? (yes/no) and What is REL Y? (X's shape)."""
        xi, yi = str(self.scene.objects.index(x)), str(self.scene.objects.index(y))
        fact = f"{x.colour} {x.shape} is {_REL_WORDS[rel]} the {y.colour} {y.shape}."
        select = [("select", [], f"{y.shape} ({yi})"), ("filter color", [0], y.colour)]
        for asked, answer in ((rel, "yes"), (CONVERSE[rel], "no")):
            self._add(
                "relation",
                (x, asked, y),
                answer,
                f"{answer.capitalize()}, the {fact}",
                select + [("verify rel", [1], f"{x.shape},{_REL_WORDS[asked]},s ({xi})")],
                ("relVerify", "rel", "verify"),
                (None, f"13-{x.shape}_{y.shape}"),
            )
        self._add(
            "what",
            (rel, y),
            x.shape,
            f"The {fact}",
            select + [("relate", [1], f"_,{_REL_WORDS[rel]},s ({xi})"), ("query", [2], "name")],
            ("relS", "rel", "query"),
            ("shape", f"14-{y.shape}_{_REL_WORDS[rel]},s"),
        )


def _xgqa(w: _Writer) -> None:
    question_ids = iter(range(210000000, 10**9))

    def items(n: int) -> list[tuple[str, str, Record]]:
        out = []
        for scene in w.scenes(n):
            image = w.image("gqa", scene)
            candidates = _Questions(scene, w.rng).out
            for q in w.rng.sample(candidates, min(QUESTIONS_PER_IMAGE, len(candidates))):
                out.append((str(next(question_ids)), image, q))
        return out

    def balanced(data: list[tuple[str, str, Record]], lang: str) -> dict[str, Record]:
        out = {}
        for qid, image, q in data:
            semantic_str = "->".join(
                f"{op['operation']}: {op['argument']}"
                + (f" {op['dependencies']}" if op["dependencies"] else "")
                for op in q["semantic"]
            )
            question = getattr(language(lang), f"{q['kind']}_q")(*q["args"])
            out[qid] = {
                "semantic": q["semantic"],
                "entailed": [],
                "equivalent": [qid],
                "question": question,
                "imageId": image,
                "isBalanced": True,
                "groups": q["groups"],
                "answer": q["answer"],
                "semanticStr": semantic_str,
                "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
                "types": q["types"],
                "fullAnswer": q["full"],
            }
        return out

    def lxmert(questions: dict[str, Record]) -> list[Record]:
        return [
            {"img_id": q["imageId"], "label": {q["answer"]: 1.0}, "question_id": qid, "sent": q["question"]}
            for qid, q in questions.items()
        ]

    test, few = items(TEST_ITEMS), items(max(XGQA_SHOTS))
    few_images = list(dict.fromkeys(image for _, image, _ in few))
    for lang in LANGS:
        w.json(f"xGQA/annotations/few_shot/{lang}/dev.json", balanced(test, lang))
        w.json(f"xGQA/annotations/few_shot/{lang}/test.json", balanced(test, lang))
        for shots in XGQA_SHOTS:
            keep = set(few_images[:shots])
            w.json(
                f"xGQA/annotations/few_shot/{lang}/train_{shots}.json",
                balanced([item for item in few if item[1] in keep], lang),
            )
    testdev, train = balanced(test, "en"), balanced(items(TRAIN_ITEMS), "en")
    for lang in TARGET_LANGS:  # translate-test: the gold English
        w.json(f"xGQA/annotations_machine-translate/few_shot/{lang}/test.json", testdev)
    w.json("gqa/annotations/testdev_balanced_questions.json", testdev)
    w.json("gqa/annotations/train_balanced_questions.json", train)
    w.json("gqa/annotations/testdev.json", lxmert(testdev), indent=4)
    w.json("gqa/annotations/train.json", lxmert(train), indent=4)
    w.json(
        "gqa/annotations/trainval_ans2label.json", {answer: i for i, answer in enumerate(ANSWERS)}, indent=4
    )
    w.json("gqa/annotations/trainval_label2ans.json", ANSWERS)


def _pairs(w: _Writer, n: int) -> list[tuple[Scene, Scene, str, Scene, bool]]:
    """(left, right, side, description, label): half the statements describe their side's image,
    half describe the other image or a perturbed copy of their own."""
    out = []
    for k in range(n):
        left, right = w.scenes(2, distinct=True)
        side = w.rng.choice(("left", "right"))
        own, other = (left, right) if side == "left" else (right, left)
        label = k % 2 == 0
        description = own if label else (other if w.rng.random() < 0.5 else _perturbed(own, w.rng))
        out.append((left, right, side, description, label))
    return out


def _marvl(w: _Writer) -> None:
    annotator = {
        "country_of_birth": "synthetic",
        "country_of_residence": "synthetic",
        "gender": "n/a",
        "age": 0,
    }
    for lang in TARGET_LANGS:
        rows, english = [], []
        for k, (left, right, side, description, label) in enumerate(_pairs(w, PAIR_TEST_ITEMS)):
            shape = description.objects[0].shape
            number = SHAPES.index(shape) + 1
            names = [
                w.image(f"marvl/{lang}", scene, f"{number}-{2 * k + j}")
                for j, scene in enumerate((left, right))
            ]
            row = {
                "concept": f"{number}-{language(lang).noun(shape)}",
                "language": lang,
                "caption": language(lang).statement(side, description),
                "left_img": f"{names[0]}.jpg",
                "right_img": f"{names[1]}.jpg",
                "annotator_info": {"annotator_id": f"{lang}_00", **annotator},
                "chapter": "Shapes",
                "id": f"{lang}-{k}",
                "label": label,
            }
            rows.append(row)
            english.append({**row, "caption": language("en").statement(side, description)})
        w.jsonl(f"marvl/zero_shot/annotations/marvl-{lang}.jsonl", rows)
        w.jsonl(f"marvl/zero_shot/annotations_machine-translate/marvl-{lang}_gmt.jsonl", english)
    # NLVR2's identifiers start with their split's name: test.jsonl holds its public test1
    for split, n, name in (
        ("train", NLVR2_TRAIN_ITEMS, "train"),
        ("dev", PAIR_TEST_ITEMS, "dev"),
        ("test", PAIR_TEST_ITEMS, "test1"),
    ):
        rows = []
        for k, (left, right, side, description, label) in enumerate(_pairs(w, n)):
            urls = [
                w.url("nlvr2", w.image("nlvr2", scene, f"{name}-{k}-0-img{j}"))
                for j, scene in enumerate((left, right))
            ]
            shape = description.objects[0].shape
            rows.append(
                {
                    "validation": {"0": str(label)},
                    "sentence": language("en").statement(side, description),
                    "left_url": urls[0],
                    "writer": "0",
                    "label": str(label),
                    "right_url": urls[1],
                    "synset": shape,
                    "query": f"{shape} {k}",
                    "identifier": f"{name}-{k}-0-0",
                    "extra_validations": {},
                }
            )
        w.jsonl(f"nlvr2/annotations/{split}.jsonl", rows)


def _english_captions(scene: Scene) -> list[str]:
    """Every English caption of the scene: a relation reads both ways."""
    captions = [caption(scene)]
    if scene.kind == "relation":
        captions.append(caption(Scene("relation", scene.objects[::-1], CONVERSE[scene.relation])))
    return captions


def _retrieval(w: _Writer) -> None:
    def flickr(n: int) -> list[tuple[str, Scene]]:
        return [(w.image("flickr30k", scene), scene) for scene in w.scenes(n, distinct=True)]

    def rows(data: list[tuple[str, Scene]], sentences: Callable[[Scene], list[str]]) -> list[Record]:
        return [{"sentences": sentences(scene), "id": fid, "img_path": f"{fid}.jpg"} for fid, scene in data]

    test = flickr(TEST_ITEMS)
    for lang in LANGS:
        w.jsonl(
            f"xFlickrCO/annotations/{lang}/test.jsonl",
            rows(test, lambda scene, lang=lang: [caption(scene, lang)]),
        )
    for lang in TARGET_LANGS:
        w.jsonl(
            f"xFlickrCO/annotations_machine-translate/{lang}/test_gmt.jsonl",
            rows(test, lambda scene: [caption(scene)]),
        )
    splits = (("test", test), ("valid", flickr(TEST_ITEMS)), ("train", flickr(TRAIN_ITEMS)))
    for split, data in splits:
        w.jsonl(f"flickr30k/annotations/{split}_ann.jsonl", rows(data, _english_captions))

    pool = [
        (w.image("wit", scene, f"test-{k:06d}"), scene)
        for k, scene in enumerate(w.scenes(TEST_ITEMS, distinct=True))
    ]

    def wit_rows(lang: str, caption_lang: str) -> list[Record]:
        return [
            {
                "image_idx": k,
                "image_url": w.url("wit", stem),
                "meta_url": f"{w.url_prefix}wit/meta/{stem}",
                "caption_reference_description": caption(scene, caption_lang),
                "language": lang,
                "page_url": f"{w.url_prefix}wit/{lang}/{stem}",
                "wit_ix": f"wit-test_{k}",
            }
            for k, (stem, scene) in enumerate(pool)
        ]

    for lang in LANGS:
        w.jsonl(f"wit/annotations/test_{lang}.jsonl", wit_rows(lang, lang))
    for lang in TARGET_LANGS:  # translate-test: the gold English
        w.jsonl(f"wit/annotations_machine-translate/test_{lang}_gmt.jsonl", wit_rows(lang, "en"))
    for split, n in (("train", TRAIN_ITEMS), ("val", TEST_ITEMS)):
        w.jsonl(
            f"wit/annotations/{split}_en.jsonl",
            [
                {
                    "language": "en",
                    "page_url": f"{w.url_prefix}wit/en/{split}-{k:06d}",
                    "image_url": w.url("wit", w.image("wit", scene, f"{split}-{k:06d}")),
                    "caption_reference_description": caption(scene),
                    "wit_ix": f"wit_{split}_{k}",
                }
                for k, scene in enumerate(w.scenes(n, distinct=True))
            ],
        )


def write_iglue(world: Path, seed: int, url_prefix: str) -> dict[str, Any]:
    """Write every task under ``world/iglue``; return records per file and the image count."""
    w = _Writer(Path(world), random.Random(f"mvlp-world:{seed}:iglue"), url_prefix)
    for task in (_xvnli, _xgqa, _marvl, _retrieval):
        task(w)
    return {"files": dict(sorted(w.counts.items())), "images": w.images}


def image_paths(task: str, record: Record, lang: str = "en") -> list[str]:
    """World-relative paths of the images an IGLUE record refers to, in order.

    ``task``: xvnli, xgqa (balanced or LXMERT form), marvl (``lang`` picks the image folder),
    nlvr2, xflickrco or flickr30k, wit.
    """
    base = "iglue/images"
    if task == "xvnli":
        return [f"{base}/flickr30k/{record['Flikr30kID']}.jpg"]
    if task == "xgqa":
        return [f"{base}/gqa/{record.get('imageId', record.get('img_id'))}.jpg"]
    if task == "marvl":
        return [f"{base}/marvl/{lang}/{record[key]}" for key in ("left_img", "right_img")]
    if task in ("xflickrco", "flickr30k"):
        return [f"{base}/flickr30k/{record['img_path']}"]
    if task in ("nlvr2", "wit"):
        keys = ("left_url", "right_url") if task == "nlvr2" else ("image_url",)
        return [f"{base}/" + record[key].split(f"/{base}/", 1)[1] for key in keys]
    raise ValueError(
        f"unknown IGLUE task {task!r}; known: xvnli, xgqa, marvl, nlvr2, xflickrco, flickr30k, wit"
    )
