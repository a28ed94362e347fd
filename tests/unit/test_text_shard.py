"""text-shard pieces: sampling weights, line decoding and parsing per format, filters, dedup
hashes, stream planning and the spec section's validation."""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
from pathlib import Path

import pytest
from testkit.text_specs import text_spec

from mvlp_core.contract import StageError
from mvlp_core.sampling import sampling_weights
from mvlp_core.spec import SpecError, TextCorpusSpec
from mvlp_core.stages.text_shard import filters
from mvlp_core.stages.text_shard.readers import BadLine, Cursor, Stream, count_lines, decode, parse, streams
from mvlp_core.stages.text_shard.stage import canonical_pair

# -- sampling weights -----------------------------------------------------------------------------


def test_weights_match_a_hand_computed_case() -> None:
    # p = (0.64, 0.32, 0.04); p^0.5 = (0.8, 0.565685, 0.2); sum 1.565685
    q = sampling_weights({"en": 640, "de": 320, "sw": 40}, alpha=0.5)
    assert q == pytest.approx(
        {"en": 0.8 / 1.565685, "de": 0.565685 / 1.565685, "sw": 0.2 / 1.565685}, rel=1e-5
    )
    # alpha 0.3 on a 100:1 split: q_en / q_sw = 100^0.3 = 3.98107
    q = sampling_weights({"en": 1000, "sw": 10})
    assert q["en"] / q["sw"] == pytest.approx(100**0.3)
    assert q["en"] == pytest.approx(3.98107 / 4.98107, rel=1e-5)


def test_weights_flatten_between_proportional_and_uniform() -> None:
    counts = {"a": 900, "b": 90, "c": 10}
    assert sampling_weights(counts, 1.0) == pytest.approx({"a": 0.9, "b": 0.09, "c": 0.01})
    assert sampling_weights(counts, 0.0) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    q = sampling_weights(counts, 0.3)
    assert math.fsum(q.values()) == pytest.approx(1.0)
    assert q["c"] > 0.01 and q["a"] < 0.9  # low-resource up-sampled, high-resource down


def test_weights_of_empty_languages_are_zero() -> None:
    assert sampling_weights({"en": 10, "sw": 0}) == {"en": 1.0, "sw": 0.0}
    assert sampling_weights({"en": 0}) == {"en": 0.0}
    assert sampling_weights({}) == {}
    with pytest.raises(ValueError, match="alpha"):
        sampling_weights({"en": 1}, -0.1)


def test_canonical_pair_puts_english_first() -> None:
    assert canonical_pair(("de", "en")) == canonical_pair(("en", "de")) == "en-de"
    assert canonical_pair(("ja", "de")) == "de-ja"


# -- decoding and parsing -------------------------------------------------------------------------


def corpus(**kw) -> TextCorpusSpec:
    base = {
        "name": "c",
        "kind": "parallel",
        "format": "wikimatrix",
        "path": "/x/{src}-{tgt}",
        "pairs": ["en-de"],
    }
    return TextCorpusSpec.model_validate(base | kw)


WM = Stream(corpus(), ("en", "de"), ("/x/en-de",))
MOSES = Stream(corpus(format="moses", path="/x/{lang}"), ("en", "de"), ("/x/en", "/x/de"))
MONO = Stream(
    corpus(kind="monolingual", format="lines", path="/x/{lang}", pairs=[], languages=["ja"]),
    ("ja",),
    ("/x/ja",),
)


def test_decode_handles_bom_crlf_and_bad_bytes() -> None:
    assert decode(b"\xef\xbb\xbfhello\r\n", 0) == "hello"
    assert decode(b"\xef\xbb\xbfhello\n", 5) == "\ufeffhello"  # a BOM is only a BOM at the start
    assert decode("Grüße\n".encode(), 3) == "Grüße"
    with pytest.raises(BadLine) as bad:
        decode(b"caf\xe9\n", 1)  # latin-1, not UTF-8
    assert bad.value.reason == "encoding_error" and "byte 3" in bad.value.detail
    with pytest.raises(BadLine, match="NUL"):
        decode(b"a\x00b\n", 1)


def test_wikimatrix_lines() -> None:
    # whitespace runs (double spaces, NBSP, ideographic space) collapse; CRLF is stripped
    line = "1.0712\tA  red\u3000circle.\tEin\u00a0roter Kreis.\r\n".encode()
    assert parse(WM, 0, (line,)) == (("A red circle.", "Ein roter Kreis."), 1.0712)
    assert parse(WM, 0, (b"-0.5\ta\tb",)) == (("a", "b"), -0.5)
    for raw, detail in [
        (b"1.07\tonly two\n", "2 tab-separated fields"),
        (b"1.07\ta\tb\tc\n", "4 tab-separated fields"),
        (b"high\ta\tb\n", "is not a number"),
        (b"nan\ta\tb\n", "not finite"),
        (b"\n", "1 tab-separated field"),
    ]:
        with pytest.raises(BadLine) as bad:
            parse(WM, 0, (raw,))
        assert bad.value.reason == "malformed_line" and detail in bad.value.detail, raw


def test_moses_and_monolingual_lines() -> None:
    assert parse(MOSES, 4, (b"two dogs\n", b"zwei Hunde\r\n")) == (("two dogs", "zwei Hunde"), None)
    with pytest.raises(BadLine, match="UTF-8"):
        parse(MOSES, 4, (b"ok\n", b"\xff\n"))
    assert parse(MONO, 0, ("\ufeff猫が好き\n".encode(),)) == (("猫が好き",), None)
    assert parse(MONO, 7, (b"  \t \n",)) == (("",), None)


# -- filters and dedup ----------------------------------------------------------------------------


def test_length_counts_words_in_every_script() -> None:
    """Japanese and Chinese words are the align stage's (MeCab, jieba), punctuation left out: a
    character count made a good Japanese translation 2.5-3 times its English (xFlickr&CO's human
    en-ja pairs: half of them past max_length_ratio 2.5)."""
    assert filters.length("a red circle", "en") == 3
    assert filters.length("赤い 円", "ja") == 2
    assert filters.length("一个红色的圆形", "zh") == 4
    c = corpus(max_length_ratio=2.5)
    for en, ja in [
        ("The museum is closed on Mondays.", "その博物館は月曜日に閉館しています。"),
        ("She plays the piano very well.", "彼女はピアノをとても上手に弾きます。"),
        ("The album was released in Japan.", "このアルバムは日本で発売された。"),
    ]:
        assert filters.check(c, ("en", "ja"), (en, ja), None) is None, (en, ja)


def test_each_filter_reason() -> None:
    c = corpus(min_score=1.04, min_words=2, max_words=6, min_chars=4, max_chars=40, max_length_ratio=2.0)
    en_de = ("en", "de")
    cases = [
        (("a red dog", "ein roter Hund"), 1.03, "below_min_score"),
        (("a red dog", ""), 1.1, "empty"),
        (("A red dog.", "a red dog"), 1.1, "identical_sides"),
        (("dog", "Hund"), 1.1, "too_short"),
        (("a b", "c d"), 1.1, "too_short"),  # 3 chars < min_chars 4
        (("a b c d e f g", "a b c d e f g h"), 1.1, "too_long"),
        (("one two three four five", "eins zwei"), 1.1, "length_ratio"),
        (("a red dog", "ein roter Hund"), 1.04, None),
    ]
    for texts, score, reason in cases:
        got = filters.check(c, en_de, texts, score)
        assert (got[0] if got else None) == reason, (texts, got)
    assert filters.check(corpus(), en_de, ("x", "y"), -5.0) is None  # every filter off by default


def test_normalised_dedup_ignores_case_punctuation_digits_and_width() -> None:
    a = filters.dedup_hash(("en", "de"), ("A red circle, 1990!", "Ein roter Kreis."), "normalised")
    b = filters.dedup_hash(("en", "de"), ("a red circle 2024", "ein roter kreis"), "normalised")
    assert a == b
    assert filters.normalise("ＡＢＣ　１２") == "abc 00"
    exact = [filters.dedup_hash(("en", "de"), t, "exact") for t in (("a", "b"), ("A", "b"), ("a", "b"))]
    assert exact[0] == exact[2] != exact[1]
    # the language is part of the identity: the same text in another stream is not a duplicate
    assert filters.dedup_hash(("de",), ("Kreis",), "exact") != filters.dedup_hash(
        ("fr",), ("Kreis",), "exact"
    )


# -- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix,compress", [("", bytes), (".gz", gzip.compress), (".xz", lzma.compress), (".bz2", bz2.compress)]
)
def test_compressed_files_read_line_by_line(tmp_path: Path, suffix: str, compress) -> None:
    data = b"0\n1\n\n3 no newline at the end"
    path = tmp_path / f"mono.de.txt{suffix}"
    path.write_bytes(compress(data))
    c = corpus(kind="monolingual", format="lines", path=str(path), pairs=[], languages=["de"])
    stream = Stream(c, ("de",), (str(path),))
    assert count_lines(stream) == 4
    cursor = Cursor()
    try:
        assert cursor.read(stream, 0, 2) == [(0, (b"0\n",)), (1, (b"1\n",))]
        assert cursor.read(stream, 3, 4) == [(3, (b"3 no newline at the end",))]  # skips ahead
        assert cursor.read(stream, 1, 2) == [(1, (b"1\n",))]  # reopens to go back
    finally:
        cursor.close()
    limited = Stream(c.model_copy(update={"limit": 2}), ("de",), (str(path),))
    assert count_lines(limited) == 2


def test_moses_files_must_be_line_aligned(tmp_path: Path) -> None:
    (tmp_path / "c.en").write_text("a\nb\nc\n")
    (tmp_path / "c.de").write_text("a\nb\n")
    stream = Stream(
        corpus(format="moses", path=str(tmp_path / "c.{lang}")),
        ("en", "de"),
        (str(tmp_path / "c.en"), str(tmp_path / "c.de")),
    )
    with pytest.raises(StageError, match="not line-aligned.*3 lines.*2"):
        count_lines(stream)


def test_missing_corpus_file_names_corpus_and_fix(tmp_path: Path) -> None:
    stream = Stream(
        corpus(path=str(tmp_path / "nope.{src}-{tgt}.tsv")), ("en", "de"), (str(tmp_path / "nope.en-de.tsv"),)
    )
    with pytest.raises(StageError, match="nope.en-de.tsv not found for corpus c .*text.corpora"):
        count_lines(stream)


# -- spec -----------------------------------------------------------------------------------------


def test_streams_fill_templates_and_overrides(tmp_path: Path) -> None:
    spec = text_spec(
        tmp_path,
        {
            "corpora": [
                {
                    "name": "wm",
                    "kind": "parallel",
                    "format": "wikimatrix",
                    "path": "s3://b/WikiMatrix.{src}-{tgt}.tsv.gz",
                    "pairs": ["de-en", "en-fr"],
                    "min_score": 1.04,
                },
                {
                    "name": "opus",
                    "kind": "parallel",
                    "format": "moses",
                    "path": "/o/{pair}/train.{lang}",
                    "pairs": ["en-de"],
                },
                {
                    "name": "cc100",
                    "kind": "monolingual",
                    "format": "lines",
                    "path": "s3://b/cc100/{lang}.txt.xz",
                    "languages": ["en", "zh"],
                    "paths": {"zh": "s3://b/cc100/zh-Hans.txt.xz"},
                },
            ]
        },
    )
    got = [(s.id, s.kind, s.files) for s in streams(spec)]
    assert got == [
        ("wm:de-en", "parallel", ("s3://b/WikiMatrix.de-en.tsv.gz",)),
        ("wm:en-fr", "parallel", ("s3://b/WikiMatrix.en-fr.tsv.gz",)),
        ("opus:en-de", "parallel", ("/o/en-de/train.en", "/o/en-de/train.de")),
        ("cc100:en", "mono", ("s3://b/cc100/en.txt.xz",)),
        ("cc100:zh", "mono", ("s3://b/cc100/zh-Hans.txt.xz",)),
    ]
    assert streams(spec)[0].key(42) == "wm-deen-0000000042"
    assert spec.text.alpha == 0.3


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"kind": "monolingual", "format": "wikimatrix", "languages": ["en"]}, "does not fit kind"),
        ({"kind": "parallel", "format": "moses", "languages": ["en"]}, "lists `pairs`"),
        ({"pairs": ["en-xx"]}, "bad language or pair"),
        ({"pairs": ["en-en"]}, "bad language or pair"),
        ({"format": "moses", "path": "/c/train"}, "need {lang}"),
        ({"pairs": ["en-de", "en-fr"], "path": "/c/one.tsv"}, "needs one of"),
        ({"format": "moses", "path": "/c/x.{lang}", "min_score": 1.0}, "only to format wikimatrix"),
        ({"paths": {"en-fr": "/x"}}, "not streams of this corpus"),
        ({"path": None}, "no path"),
        ({"min_words": 5, "max_words": 3}, "max_words 3 < min_words 5"),
    ],
)
def test_bad_corpus_specs_say_what_is_wrong(tmp_path: Path, bad: dict, message: str) -> None:
    entry = {
        "name": "c",
        "kind": "parallel",
        "format": "wikimatrix",
        "path": "/c/{src}-{tgt}.tsv",
        "pairs": ["en-de"],
    } | bad
    with pytest.raises(SpecError) as err:
        text_spec(tmp_path, {"corpora": [entry]})
    assert "text.corpora.0" in str(err.value) and message in str(err.value)


def test_corpus_names_are_unique_and_alpha_bounded(tmp_path: Path) -> None:
    entry = {"name": "c", "kind": "monolingual", "format": "lines", "path": "/c/{lang}", "languages": ["en"]}
    with pytest.raises(SpecError, match="repeated: \\['c'\\]"):
        text_spec(tmp_path, {"corpora": [entry, entry]})
    with pytest.raises(SpecError, match="text.alpha"):
        text_spec(tmp_path, {"alpha": 1.5})
