import pytest

from mvlp_core.stages.align.tokenize import tokenize


def toks(text: str, lang: str) -> list[str]:
    out = tokenize(text, lang)
    for word, start, end in out:
        assert text[start:end] == word
        assert word.strip() == word and word
    assert [s for _, s, _ in out] == sorted(s for _, s, _ in out)
    return [w for w, _, _ in out]


def test_english_words_and_punctuation():
    assert toks("A dog's ball, on the grass... (2 kids)!", "en") == [
        "A",
        "dog's",
        "ball",
        ",",
        "on",
        "the",
        "grass",
        "...",
        "(",
        "2",
        "kids",
        ")",
        "!",
    ]


def test_spans_point_into_the_original_text():
    assert tokenize("  two  dogs\trun ", "en") == [("two", 2, 5), ("dogs", 7, 11), ("run", 12, 15)]


def test_whitespace_only_text_has_no_tokens():
    assert toks("", "de") == []
    assert toks(" \t\n\u3000 ", "ja") == []


def test_numbers_keep_inner_separators():
    assert toks("1,000.5 km and 3.", "en") == ["1,000.5", "km", "and", "3", "."]


def test_french_elision_splits_after_the_apostrophe():
    words = toks("L'homme qu'il voit aujourd'hui, c’est l'été.", "fr")
    assert words == [
        "L'",
        "homme",
        "qu'",
        "il",
        "voit",
        "aujourd'hui",
        ",",
        "c’",
        "est",
        "l'",
        "été",
        ".",
    ]


def test_english_keeps_inner_apostrophes():
    assert toks("don't l'homme", "en") == ["don't", "l'homme"]


def test_combining_marks_stay_inside_words():
    assert toks("cafe\u0301 bien", "fr") == ["cafe\u0301", "bien"]
    assert toks("நான் வீட்டுக்கு", "ta") == ["நான்", "வீட்டுக்கு"]
    assert toks("Grüße, Straße", "de") == ["Grüße", ",", "Straße"]


def test_format_characters_join_words_or_vanish():
    assert toks("Stra\u00adße \u200b zwei\u200b", "de") == ["Stra\u00adße", "zwei"]
    assert toks("न\u200dहीं", "bn") == ["न\u200dहीं"]


def test_chinese_is_segmented_with_jieba():
    words = toks("两个红色的狗在汽车后面，T恤 café。", "zh")
    assert words[:6] == ["两个", "红色", "的", "狗", "在", "汽车"]
    assert "，" in words and "café" in words and words[-1] == "。"


def test_japanese_is_segmented_with_mecab():
    words = toks("赤い円が青い四角の上にある。\u3000Tシャツ", "ja")
    assert words[:9] == ["赤い", "円", "が", "青い", "四角", "の", "上", "に", "ある"]
    assert "。" in words and "\u3000" not in words


def test_unknown_language_is_an_error():
    with pytest.raises(ValueError, match="unknown language"):
        tokenize("text", "xx")


def test_latin_text_takes_the_short_pattern_with_the_same_tokens():
    """The short pattern is the full one less alternatives text below U+0300 cannot hold: checked
    on every such character and on random text (letters, digits, joiners, punctuation, spaces)."""
    import random
    import unicodedata

    from mvlp_core.stages.align import tokenize as module

    latin = [chr(c) for c in range(0x300)]
    assert [c for c in latin if unicodedata.category(c) == "Cf"] == ["\u00ad"]
    assert not [c for c in latin if unicodedata.category(c).startswith("M")]
    assert module._pattern("Grüße, Straße, řeka") is module._latin_re()
    assert module._pattern("Grüße \u2019") is module._token_re()
    assert module._pattern("cafe\u0301") is module._token_re()

    def both(text: str) -> tuple[list, list]:
        return (
            [(m.group(), m.span(), m.lastgroup) for m in module._latin_re().finditer(text)],
            [(m.group(), m.span(), m.lastgroup) for m in module._token_re().finditer(text)],
        )

    for c in latin:
        short, full = both(f"a{c}b 1{c}2 {c}{c} {c}")
        assert short == full, repr(c)
    rng = random.Random(0)
    alphabet = "aZé9ß0'.,\u00ad-_ \t!?ª²¼×÷řĚǅʰ˚"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        short, full = both(text)
        assert short == full, repr(text)


def test_no_mark_or_format_character_lies_outside_the_scanned_planes():
    import sys
    import unicodedata

    from mvlp_core.stages.align.tokenize import _MARK_AND_FORMAT_PLANES

    scanned = set().union(*map(set, _MARK_AND_FORMAT_PLANES))
    outside = [
        c
        for c in range(sys.maxunicode + 1)
        if c not in scanned and unicodedata.category(chr(c)) in {"Mn", "Mc", "Me", "Cf"}
    ]
    assert outside == []
