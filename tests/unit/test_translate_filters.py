"""Quality filters on translation output: each failure mode real MT shows, and outputs that pass."""

from __future__ import annotations

import pytest

from mvlp_core.spec import TranslateFilters
from mvlp_core.stages.translate.filters import check, repeated_ngram, script_share

SRC = "a man in a red jacket is riding a bicycle down the street"
DEFAULT = TranslateFilters()


@pytest.mark.parametrize(
    ("lang", "output"),
    [
        ("de", "Ein Mann in einer roten Jacke fährt mit dem Fahrrad die Straße entlang."),
        ("fr", "Un homme en veste rouge descend la rue à vélo."),
        ("ja", "赤いジャケットを着た男性が自転車で通りを走っている。"),
        ("zh", "一个穿红色夹克的男人骑着自行车在街上行驶。"),
        ("ru", "Мужчина в красной куртке едет на велосипеде по улице."),
        ("ko", "빨간 재킷을 입은 남자가 자전거를 타고 거리를 내려가고 있다."),
        ("ar", "رجل يرتدي سترة حمراء يركب دراجة في الشارع"),
        ("el", "Ένας άντρας με κόκκινο μπουφάν κάνει ποδήλατο στον δρόμο."),
    ],
)
def test_good_translations_pass(lang, output):
    assert check(SRC, output, lang, DEFAULT) is None


def test_empty_and_whitespace_output():
    assert check(SRC, "", "de", DEFAULT) == ("empty_output", "")
    assert check(SRC, "  \n", "de", DEFAULT)[0] == "empty_output"


def test_copied_source_is_rejected_unless_disabled():
    assert check(SRC, " A man in a red jacket is riding a bicycle down the street ", "de", DEFAULT)[0] == (
        "identical_to_source"
    )
    relaxed = TranslateFilters(identical=False, script_share=0)
    assert check(SRC, SRC, "de", relaxed) is None


def test_length_ratio_bounds_depend_on_the_script():
    truncated = check(SRC, "Ein Mann.", "de", DEFAULT)
    assert truncated[0] == "length_ratio" and "latin" in truncated[1]
    runaway = "Ein Mann in einer roten Jacke fährt mit dem Fahrrad die Straße entlang, " * 3
    assert check(SRC, runaway, "de", DEFAULT)[0] == "length_ratio"
    # 12 characters of Chinese for 57 of English is normal (ratio 0.21), though not for German.
    assert check(SRC, "红夹克男子骑车沿街而行。", "zh", DEFAULT) is None
    assert check(SRC, "Mann fährt Rad", "de", DEFAULT)[0] == "length_ratio"
    # Short sources skip the ratio check; an empty mapping disables it.
    assert check("a dog", "ein brauner Hund, der auf einer großen Wiese spielt", "de", DEFAULT) is None
    assert check(SRC, "Ein Mann.", "de", TranslateFilters(length_ratio={})) is None


def test_wrong_script_for_the_target_language():
    # Japanese asked for, Latin (romaji / English) came out.
    reason, detail = check(SRC, "akai jaketto no otoko ga jitensha ni notte iru", "ja", DEFAULT)
    assert reason == "wrong_script" and "japanese" in detail
    # Russian asked for, German came out.
    assert check(SRC, "Ein Mann in einer roten Jacke fährt Fahrrad.", "ru", DEFAULT)[0] == "wrong_script"
    # Korean asked for, Japanese came out.
    assert check(SRC, "赤いジャケットを着た男性が自転車で走っている", "ko", DEFAULT)[0] == "wrong_script"
    # Only punctuation or digits where a non-Latin script is expected.
    assert check("a group of 12 people", "12 ... 12", "zh", DEFAULT)[0] == "wrong_script"
    # A Latin brand name inside Chinese text is fine; mostly-English is not.
    assert check(SRC, "一个穿着Adidas红色夹克的男人骑着自行车在街上", "zh", DEFAULT) is None
    assert check(SRC, "a man riding 自行车 on the street in red", "zh", DEFAULT)[0] == "wrong_script"


def test_script_share():
    assert script_share("Привет, world", "cyrillic") == pytest.approx(6 / 11)
    assert script_share("ひらがなとカタカナと漢字", "japanese") == 1.0
    assert script_share("123 !", "latin") is None


def test_degenerate_repetition():
    looping = "Ein Mann fährt Fahrrad Fahrrad Fahrrad Fahrrad Fahrrad auf der Straße"
    assert check(SRC, looping, "de", DEFAULT) == ("repetition", "'fahrrad' x5")
    phrase = "un homme sur un vélo, sur un vélo, sur un vélo, sur un vélo dans la rue"
    assert check(SRC, phrase, "fr", DEFAULT)[0] == "repetition"
    # Scripts without spaces repeat in characters.
    assert check(SRC, "男人骑自行车自行车自行车自行车自行车", "zh", DEFAULT)[0] == "repetition"
    # ... but a number is one unit there too: 10000 is not '0' x4
    source = "More than 10000 runners took part in the marathon, the car sold for 1,000,000 dollars"
    for lang, text in [
        ("zh", "超过10000名跑步者参加了马拉松比赛，这辆车售价1,000,000美元"),
        ("ja", "10000人以上のランナーがマラソンに参加し、車は1000000ドルで売れた"),
    ]:
        assert check(source, text, lang, DEFAULT) is None, lang
    assert check(SRC, "ザーザーザーザー雨が降っている", "ja", DEFAULT)[0] == "repetition"
    # Three in a row is allowed by default (max_repeats=3), and natural text does not trip it.
    assert (
        check(SRC, "Ein Mann fährt sehr sehr sehr schnell mit dem Fahrrad die Straße", "de", DEFAULT) is None
    )
    assert repeated_ngram("a b a b a b a b".split(), max_repeats=3) == ("a b", 4)
    assert repeated_ngram("a b c d".split(), max_repeats=1) is None
    assert check(SRC, looping, "de", TranslateFilters(max_repeats=0)) is None
