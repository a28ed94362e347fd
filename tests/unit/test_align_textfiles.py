"""Gold and text formats of the real WPT gold sets, and `mvlp align-eval` scoring them."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from mvlp_core.stages.align import textfiles

GOLD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alignment-gold"
if not GOLD.exists():
    GOLD = Path("/work/shared/data/alignment-gold")
needs_gold = pytest.mark.skipif(not GOLD.exists(), reason="shared/data/alignment-gold is absent")


@needs_gold
def test_en_fr_joint_file_and_one_based_gold():
    src, tgt = textfiles.read_joint(GOLD / "en-fr" / "enfr.src-tgt")
    gold = textfiles.read_gold(GOLD / "en-fr" / "enfr.gold", one_based=True)
    assert len(src) == len(tgt) == len(gold) == 447
    assert src[2].split() == ["oh", ",", "oh", "!"]
    sure, possible = gold[2]
    assert sure == {(0, 0), (1, 1), (2, 2), (3, 3)} and sure <= possible
    assert sum(len(p - s) for s, p in gold) > 0  # the Hansards have possible links
    for (_, p), e, f in zip(gold, src, tgt):
        assert all(i < len(e.split()) and j < len(f.split()) for i, j in p)


@needs_gold
def test_ro_en_gold_indexes_romanian_first_and_reverses():
    src, tgt = textfiles.read_joint(GOLD / "ro-en" / "roen.src-tgt")
    gold = textfiles.read_gold(GOLD / "ro-en" / "roen.gold", one_based=True)
    assert len(gold) == 248 and src[0].split() == ["ajunge", "!"]
    assert gold[0][0] == {(1, 3), (0, 2)}  # "!"->"!", "ajunge"->"enough"
    reverse = textfiles.read_gold(GOLD / "ro-en" / "roen.gold", one_based=True, reversed_=True)
    assert reverse[0][0] == {(3, 1), (2, 0)}


@needs_gold
def test_en_hi_wpt_sentences_and_links():
    d = GOLD / "en-hi"
    eng, hin = textfiles.read_lines(d / "test.eng", "wpt"), textfiles.read_lines(d / "test.hin", "wpt")
    assert len(eng) == len(hin) == 90
    assert not any("\r" in s or "<s" in s or "</s>" in s for s in eng + hin)
    assert textfiles.wpt_numbers(d / "test.eng") == textfiles.wpt_numbers(d / "test.hin")
    gold = textfiles.read_gold(d / "test.eng.hin.wa", "wpt", sentences=d / "test.eng")
    assert len(gold) == 90 and sum(len(s) for s, _ in gold) == 1409
    # sentence 26: "26 2 1" -> English word 2 ("Government") with Hindi word 1
    assert (1, 0) in gold[0][0]
    outside = [
        (n, link)
        for n, ((s, _), e, h) in enumerate(zip(gold, eng, hin))
        for link in s
        if not (link[0] < len(e.split()) and link[1] < len(h.split()))
    ]
    assert outside == [(40, (32, 33))]  # the WPT release links one Hindi word past the end


def test_wpt_gold_null_links_and_possible_marks(tmp_path):
    wa = tmp_path / "x.wa"
    wa.write_text("7 1 1 S\n7 2 0\n7 2 3 P\n3 1 2\n")
    assert textfiles.read_gold(wa, "wpt") == [({(0, 1)}, {(0, 1)}), ({(0, 0)}, {(0, 0), (1, 2)})]
    wa.write_text("a b c\n")
    with pytest.raises(ValueError, match="x.wa:1"):
        textfiles.read_gold(wa, "wpt")


def test_align_eval_cli_scores_sure_and_possible(tmp_path):
    (tmp_path / "links").write_text("0-0 1-2\n0-0\n")
    (tmp_path / "gold").write_text("1-1 2p3 3-3\n1-1\n")
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "align-eval",
            "--links",
            str(tmp_path / "links"),
            "--gold",
            str(tmp_path / "gold"),
            "--gold-one-based",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    # A = 3 links, S = 3 sure, |A∩S| = 2, |A∩P| = 3
    assert figures["precision"] == 1.0 and figures["recall"] == round(2 / 3, 4)
    assert figures["aer"] == round(1 - 5 / 6, 4)
    bad = runner.invoke(
        app,
        [
            "align-eval",
            "--links",
            str(tmp_path / "links"),
            "--gold",
            str(tmp_path / "links"),
            "--gold-format",
            "moses",
        ],
    )
    assert bad.exit_code == 2 and "unknown gold format" in bad.output
