"""Dictionary mining and code-switching on the synthetic world's gold-aligned captions."""

import random
from collections import Counter, defaultdict

import pyarrow as pa
import pytest

from mvlp_core import dictionary
from mvlp_core.synth.grammar import gold_links, random_scene, realise
from mvlp_core.train.codeswitch import (
    code_switch,
    load_dictionaries,
    table_from_entries,
    tables_from_record,
)

LANGS = ("de", "fr", "zh")


@pytest.fixture(scope="module")
def records():
    """200 training records (DESIGN.md schema) whose alignments are the grammar's gold links."""
    rng = random.Random(3)
    out = []
    for n in range(200):
        scene = random_scene(rng)
        en = realise(scene, "en")
        record = {"key": f"synth-{n:09d}", "words": {"en": list(en.words)}, "alignments": {}}
        for lang in LANGS:
            xx = realise(scene, lang)
            record["words"][lang] = list(xx.words)
            record["alignments"][lang] = [list(link) for link in gold_links(en, xx)]
        out.append(record)
    return out


def gold_pairs(records, lang):
    pairs = defaultdict(set)
    for r in records:
        for i, j in r["alignments"][lang]:
            pairs[r["words"]["en"][i].lower()].add(r["words"][lang][j].lower())
    return pairs


def links_table(records, lang) -> pa.Table:
    """The align stage's columns for these records."""
    return pa.table(
        {
            "words_en": [r["words"]["en"] for r in records],
            "words": [r["words"][lang] for r in records],
            "links": [r["alignments"][lang] for r in records],
        }
    )


def mined(records, lang, tmp_path, **thresholds):
    entries = dictionary.select(dictionary.count_links([links_table(records, lang)]), **thresholds)
    dictionary.write_tsv(tmp_path / f"dictionary-{lang}.tsv", entries)
    return entries


def test_dictionary_keeps_frequent_likely_pairs(records, tmp_path):
    entries = mined(records, "de", tmp_path, min_count=3, min_prob=0.2)
    gold = gold_pairs(records, "de")
    assert entries and all(e.xx in gold[e.en] for e in entries)
    assert all(e.count >= 3 and e.prob >= 0.2 for e in entries)
    counts = dictionary.count_links([links_table(records, "de")])
    dropped = {(en, xx) for (en, xx), n in counts.items() if n < 3}
    assert dropped and not dropped & {(e.en, e.xx) for e in entries}
    assert dictionary.read_tsv(tmp_path / "dictionary-de.tsv") == entries
    assert {"rot", "roter", "rote", "roten", "rotes"} & {e.xx for e in entries if e.en == "red"}


def test_link_counts_lowercase_like_python_over_tables_and_slices():
    """Counted in Arrow, the same as counting every link in Python: str.lower's special cases
    (dotted capital I, final sigma), words linked twice, rows without links, a sliced table."""
    rows = [
        (
            ["İstanbul", "ΟΔΟΣ", "The", "the"],
            ["Stadt", "Weg", "der", "die"],
            [[0, 0], [1, 1], [2, 2], [3, 2], [3, 3]],
        ),
        (["A"], ["ein"], []),
        (["The", "dog"], ["Der", "Hund"], [[0, 0], [1, 1], [1, 1]]),
    ]
    expected: Counter = Counter()
    for en, xx, links in rows:
        for i, j in links:
            expected[(en[i].lower(), xx[j].lower())] += 1
    records = [{"words": {"en": en, "de": xx}, "alignments": {"de": links}} for en, xx, links in rows]
    table = links_table(records, "de")
    assert dictionary.count_links([table]) == expected
    assert dictionary.count_links([table.slice(0, 1), table.slice(1)]) == expected
    assert dictionary.count_links([table.slice(1, 1)]) == Counter()


def test_code_switch_with_dictionaries_is_deterministic_and_correct(records, tmp_path):
    for lang in LANGS:
        mined(records, lang, tmp_path, min_count=2, min_prob=0.1)
    tables = load_dictionaries(tmp_path, LANGS)
    gold = {lang: gold_pairs(records, lang) for lang in LANGS}
    langs_used = set()
    differs = 0
    for r in records[:50]:
        words = r["words"]["en"]
        out = code_switch(words, tables, ratio=0.3, seed=1, key=r["key"])
        assert out == code_switch(words, tables, ratio=0.3, seed=1, key=r["key"])
        translatable = sum(any(w.lower() in t for t in tables.values()) for w in words)
        assert len(out.replaced) == min(translatable, round(0.3 * len(words)))
        for i, lang, translation in out.replaced:
            assert out.words[i] == translation and translation in gold[lang][words[i].lower()]
            langs_used.add(lang)
        assert [w for k, w in enumerate(out.words) if k not in {i for i, _, _ in out.replaced}] == [
            w for k, w in enumerate(words) if k not in {i for i, _, _ in out.replaced}
        ]
        differs += out != code_switch(words, tables, ratio=0.3, seed=2, key=r["key"])
    assert langs_used == set(LANGS) and differs > 10


def test_code_switch_with_the_captions_own_alignments(records):
    record = records[0]
    tables = tables_from_record(record)
    words = record["words"]["en"]
    out = code_switch(words, {"de": tables["de"]}, ratio=1.0, seed=0, key=record["key"])
    linked = defaultdict(list)
    for i, j in record["alignments"]["de"]:
        linked[i].append(record["words"]["de"][j])
    assert {i for i, _, _ in out.replaced} == set(linked)  # every aligned word, none other
    for i, lang, translation in out.replaced:
        assert lang == "de" and translation == " ".join(linked[i])
    assert code_switch(words, tables, ratio=0.0, seed=0, key="k").replaced == []
    with pytest.raises(ValueError, match="ratio"):
        code_switch(words, tables, ratio=1.5, seed=0, key="k")


def test_table_weights_follow_probabilities():
    table = table_from_entries(
        [dictionary.Entry("dog", "hund", 9, 0.9), dictionary.Entry("dog", "hunde", 1, 0.1)]
    )
    picks = [code_switch(["dog"], {"de": table}, ratio=1.0, seed=0, key=str(k)).words[0] for k in range(400)]
    assert 0.8 < picks.count("hund") / len(picks) < 0.97
