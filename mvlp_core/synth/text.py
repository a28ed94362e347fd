"""Text-only corpora for the synthetic world: WikiMatrix-format en–xx TSVs and monolingual files.

They stand in for WikiMatrix and CC-100: sentences from the world's grammar that are not image
captions (statements about an image and questions), translated by construction. Each file also
holds planted bad lines, one kind per reject reason of the text-shard stage under the demo's
filters (`data_specs/pipelines/demo.yaml`), so the demo shows every reason; `world.json` counts
them. Files are byte-identical for the same seed (gzip with mtime 0).
"""

from __future__ import annotations

import gzip
import random
from collections import Counter
from pathlib import Path
from typing import Any

from mvlp_core.synth.grammar import (
    COLOURS,
    LANGS,
    RELATIONS,
    SHAPES,
    TARGET_LANGS,
    Obj,
    Scene,
    language,
    random_scene,
)

# good lines per file, skewed as in WikiMatrix and CC-100 so the sampling weights differ. ja and zh
# went from 50 and 40 to 80 and 70: 15-18 side statements were too few for MaRVL's gate to transfer
PARALLEL_LINES = {"de": 120, "fr": 100, "cs": 70, "ja": 80, "zh": 70}
MONO_LINES = {"en": 160, "de": 110, "fr": 80, "cs": 50, "ja": 35, "zh": 25}
MIN_SCORE = 1.04  # the demo's wikimatrix.min_score
SHORT = {"en": "circle", "de": "Kreis", "fr": "cercle", "cs": "kruh", "ja": "円", "zh": "星"}


def _form(rng: random.Random) -> tuple[str, tuple]:
    """A sentence as (method of grammar.Language, its arguments): never an image caption. The
    questions cover every form xGQA asks, as a real parallel corpus would hold such questions.
    Statements are 3 in 8: the pretraining text is where the side words ("the left image") of the
    other languages meet the English ones that MaRVL's gate learns."""
    kind = rng.choice(
        ("statement", "statement", "statement", "exist_q", "relation_q", "what_q", "colour_q", "shape_q")
    )
    if kind == "statement":
        return kind, (rng.choice(("left", "right")), random_scene(rng))
    if kind == "exist_q":
        return kind, (Obj(rng.choice(SHAPES), rng.choice(COLOURS), rng.choice(("small", "medium", "big"))),)
    if kind == "colour_q":
        return kind, (rng.choice(SHAPES), rng.random() < 0.3)
    if kind == "shape_q":
        return kind, (rng.choice(COLOURS),)
    a, b = (Obj(shape, rng.choice(COLOURS)) for shape in rng.sample(SHAPES, 2))
    rel = rng.choice(RELATIONS)
    return kind, ((a, rel, b) if kind == "relation_q" else (rel, b))


def _say(form: tuple[str, tuple], lang: str) -> str:
    method, args = form
    return getattr(language(lang), method)(*args)


def _unique_forms(rng: random.Random, n: int, lang: str) -> list[tuple[str, tuple]]:
    forms, seen = [], set()
    while len(forms) < n:
        form = _form(rng)
        if _say(form, lang) not in seen:
            seen.add(_say(form, lang))
            forms.append(form)
    return forms


def _singles(lang: str, colours: tuple[str, ...]) -> list[str]:
    return [language(lang).statement("left", Scene("single", (Obj("circle", c),))) for c in colours]


def _join(lang: str, parts: list[str]) -> str:
    return ("" if lang in ("ja", "zh") else " ").join(parts)


def _wikimatrix(rng: random.Random, xx: str) -> tuple[bytes, dict[str, Any]]:
    """score<TAB>en<TAB>xx lines, sorted by descending score like the real files, bad lines mixed in."""
    forms = _unique_forms(rng, PARALLEL_LINES[xx], "en")
    good = sorted(
        ((round(rng.uniform(MIN_SCORE + 0.001, 1.3), 4), _say(f, "en"), _say(f, xx)) for f in forms),
        key=lambda line: -line[0],
    )
    lines = [f"{s}\t{en}\t{tx}".encode() for s, en, tx in good]
    low = sorted((round(rng.uniform(0.9, MIN_SCORE - 0.001), 4) for _ in range(3)), reverse=True)
    tail = [f"{s}\t{_say(f, 'en')}\t{_say(f, xx)}".encode() for s, f in zip(low, _unique_forms(rng, 3, "en"))]
    s, en, tx = good[rng.randrange(len(good))]
    planted = [
        ("malformed_line", f"{s}\t{en}".encode()),  # target column missing
        ("malformed_line", f"n/a\t{en}\t{tx}".encode()),
        ("encoding_error", f"{s}\t".encode() + b"\xff\xfe broken" + f"\t{tx}".encode()),
        ("identical_sides", f"{s}\t{en}\t{en}".encode()),
        ("empty", f"{s}\t{en}\t ".encode()),
        ("too_short", f"{s}\t{SHORT['en']}\t{SHORT[xx]}".encode()),
        (
            "too_long",
            f"{s}\t{_join('en', _singles('en', COLOURS[:5]))}\t{_join(xx, _singles(xx, COLOURS[:5]))}".encode(),
        ),
        (
            "length_ratio",
            f"{s}\t{_join('en', _singles('en', COLOURS[:4]))}\t{language(xx).text(Scene('single', (Obj('square', 'red'),)))}".encode(),
        ),
    ]
    for _, line in planted:
        lines.insert(rng.randrange(len(lines) + 1), line)
    # duplicates come after their original: an exact copy and one differing in case and punctuation
    for variant in (lambda t: t, lambda t: t.rstrip(".?。？").lower()):
        s, en, tx = good[rng.randrange(len(good))]
        at = lines.index(f"{s}\t{en}\t{tx}".encode())
        lines.insert(rng.randrange(at + 1, len(lines) + 1), f"{s}\t{variant(en)}\t{variant(tx)}".encode())
    lines += tail
    reasons = Counter(r for r, _ in planted) + Counter(duplicate=2, below_min_score=len(tail))
    counts = {"lines": len(lines), "good": len(good), "planted": dict(sorted(reasons.items()))}
    return b"\n".join(lines) + b"\n", counts


def _mono(rng: random.Random, lang: str) -> tuple[bytes, dict[str, Any]]:
    """One sentence per line; blank lines between "documents" as in CC-100; bad lines mixed in."""
    good = [_say(f, lang) for f in _unique_forms(rng, MONO_LINES[lang], lang)]
    lines = [t.encode() for t in good]
    planted = [
        ("empty", b""),
        ("empty", b"   "),
        ("too_short", SHORT[lang].encode()),
        ("encoding_error", b"\xc3\x28 " + good[0].encode()),
    ]
    for _, line in planted:
        lines.insert(rng.randrange(1, len(lines) + 1), line)
    again = good[rng.randrange(len(good) // 2)].encode()
    lines.insert(rng.randrange(lines.index(again) + 1, len(lines) + 1), again)
    eol = b"\r\n" if lang == "cs" else b"\n"  # Windows line ends in one file
    data = eol.join(lines) + eol
    if lang == "fr":
        data = b"\xef\xbb\xbf" + data  # and a byte-order mark in another
    reasons = Counter(r for r, _ in planted) + Counter(duplicate=1)
    counts = {"lines": len(lines), "good": len(good), "planted": dict(sorted(reasons.items()))}
    return data, counts


def write_text_corpora(out: Path, seed: int) -> dict[str, Any]:
    """``text/wikimatrix.en-{xx}.tsv.gz`` and ``text/mono.{lang}.txt``; returns their counts."""
    folder = out / "text"
    folder.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"parallel": {}, "mono": {}}
    for xx in TARGET_LANGS:
        data, counts = _wikimatrix(random.Random(f"mvlp-world:{seed}:wikimatrix:{xx}"), xx)
        (folder / f"wikimatrix.en-{xx}.tsv.gz").write_bytes(gzip.compress(data, mtime=0))
        info["parallel"][f"en-{xx}"] = counts
    for lang in LANGS:
        data, counts = _mono(random.Random(f"mvlp-world:{seed}:mono:{lang}"), lang)
        (folder / f"mono.{lang}.txt").write_bytes(data)
        info["mono"][lang] = counts
    return info
