import pytest

from mvlp_core.stages.align.aer import parse_pharaoh, score
from mvlp_core.stages.align.symmetrize import grow_diag_final_and


def test_identical_directions_give_their_links():
    links = [(0, 0), (1, 2), (2, 1)]
    assert grow_diag_final_and(links, reversed(links)) == sorted(links)


def test_each_phase_adds_links():
    # intersection {(0,0), (1,1)}; grow-diag adds (1,2) (j=2 unaligned, next to (1,1)) and then
    # (2,1) (i=2 unaligned, next to (1,1)); (2,2) is rejected because by then both its words are
    # aligned — atools sweeps in (i, j) order and counts links added earlier in the sweep.
    # final-and adds the isolated forward link (4,4) (both words unaligned) but not the reverse
    # link (4,0): word 4 is aligned by then, and target 0 always was.
    forward = [(0, 0), (1, 1), (2, 2), (2, 1), (4, 4)]
    reverse = [(0, 0), (1, 1), (1, 2), (4, 0)]
    assert grow_diag_final_and(forward, reverse) == [(0, 0), (1, 1), (1, 2), (2, 1), (4, 4)]


def test_growth_repeats_until_nothing_changes():
    # The sweep meets (0,1) before (1,1) joins the alignment, so only a second sweep adds it;
    # final-and could not (target 1 is aligned by then).
    forward = [(2, 2), (0, 1)]
    reverse = [(2, 2), (1, 1)]
    assert grow_diag_final_and(forward, reverse) == [(0, 1), (1, 1), (2, 2)]


def test_grow_diag_needs_an_unaligned_word():
    # (1,1) touches (0,0) diagonally, but both its words are covered by the intersection.
    forward = [(0, 0), (1, 2), (2, 1), (1, 1)]
    reverse = [(0, 0), (1, 2), (2, 1)]
    assert grow_diag_final_and(forward, reverse) == [(0, 0), (1, 2), (2, 1)]


def test_final_and_requires_both_words_unaligned():
    # Neither link touches the intersection; (3,0) shares target 0 with it, (5,5) is free.
    forward = [(0, 0), (3, 0), (5, 5)]
    reverse = [(0, 0)]
    assert grow_diag_final_and(forward, reverse) == [(0, 0), (5, 5)]


def test_final_and_scans_forward_before_reverse():
    # Both directions claim word pair 4 differently; the forward link wins, the reverse one then
    # finds source word 4 aligned.
    assert grow_diag_final_and([(4, 4)], [(4, 5)]) == [(4, 4)]


def test_empty_alignments():
    assert grow_diag_final_and([], []) == []


def test_parse_pharaoh_sure_and_possible():
    sure, possible = parse_pharaoh("1-1 2p3 3-2\n", one_based=True)
    assert sure == {(0, 0), (2, 1)}
    assert possible == {(0, 0), (1, 2), (2, 1)}
    assert parse_pharaoh("") == (set(), set())
    assert parse_pharaoh("0-0 1-2")[0] == {(0, 0), (1, 2)}


@pytest.mark.parametrize("line", ["1:2", "a-b", "0-0", "1p"])
def test_parse_pharaoh_rejects_bad_links(line):
    with pytest.raises(ValueError):
        parse_pharaoh(line, one_based=True)


def test_aer_with_sure_and_possible_links():
    predicted = {(0, 0), (1, 1), (2, 3), (3, 3)}
    sure = {(0, 0), (1, 1), (2, 2)}
    possible = {(2, 3)}  # widened with the sure links
    result = score([(predicted, sure, possible)])
    # |A|=4, |S|=3, |A∩S|=2, |A∩P|=3
    assert result.precision == pytest.approx(3 / 4)
    assert result.recall == pytest.approx(2 / 3)
    assert result.aer == pytest.approx(1 - 5 / 7)


def test_aer_sums_counts_over_sentences():
    perfect = ({(0, 0)}, {(0, 0)}, set())
    wrong = ({(0, 1), (1, 0)}, {(0, 0)}, set())
    result = score([perfect, wrong])
    assert (result.predicted, result.sure) == (3, 2)
    assert result.aer == pytest.approx(1 - 2 / 5)
    assert score([perfect]).aer == 0.0


def test_aer_of_empty_inputs():
    assert score([]).aer == 0.0
    missed = score([(set(), {(0, 0)}, set())])
    assert (missed.precision, missed.recall, missed.aer) == (1.0, 0.0, 1.0)
