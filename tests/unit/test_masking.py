"""bert_mask: BERT's 15% selection (at least one per row), the 80/10/10 corruption, specials and
padding never selected, labels = original ids at the selected positions only. Rates are checked
against binomial 99.9% intervals over many draws, so a wrong rate fails and a right one passes
(one false alarm in a thousand runs)."""

from __future__ import annotations

import math

import pytest
import torch

from mvlp_core.model.parts.masking import IGNORE, bert_mask

VOCAB, MASK_ID, BOS, PAD, EOS = 50, 49, 0, 1, 2
Z = 3.29  # two-sided 99.9%


def within(count: float, n: float, p: float) -> bool:
    """`count` successes of `n` trials lie in the binomial 99.9% interval around n·p."""
    return abs(count - n * p) <= Z * math.sqrt(n * p * (1 - p)) + 1


def rows(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, L]: <s> words </s> <pad>..., and the never-select mask (specials + pad)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths) + 2
    ids = torch.full((len(lengths), width), PAD)
    for i, n in enumerate(lengths):
        ids[i, 0] = BOS
        ids[i, 1 : n + 1] = torch.randint(4, MASK_ID, (n,), generator=g)
        ids[i, n + 1] = EOS
    return ids, (ids == BOS) | (ids == EOS) | (ids == PAD)


LENGTHS = [1, 2, 3, 5, 8, 13, 21, 34, 40, 60]


def draws(n: int, p: float = 0.15):
    ids, never = rows(LENGTHS)
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        yield ids, never, *bert_mask(ids, never, VOCAB, MASK_ID, g, p)


def test_selection_rate_is_p_with_one_forced_per_row() -> None:
    """E[selected in a row of n maskable tokens] = n·p + (1 − p)^n (the forced one when none drew)."""
    p, n_draws = 0.15, 800
    expected = sum(n * p + (1 - p) ** n for n in LENGTHS)
    selected = 0
    for _, _, _, labels in draws(n_draws, p):
        chosen = labels != IGNORE
        assert chosen.any(dim=1).all(), "every row with a maskable token has a selection"
        selected += int(chosen.sum())
    trials = n_draws * sum(LENGTHS)
    assert within(selected, trials, n_draws * expected / trials), (selected, n_draws * expected)
    # long rows alone: the plain 15% (the forced one is (0.85)^60 ≈ 6e-5 there)
    long_ids, long_never = rows([60] * 20, seed=3)
    g = torch.Generator().manual_seed(4)
    picked = sum(
        int((bert_mask(long_ids, long_never, VOCAB, MASK_ID, g)[1] != IGNORE).sum()) for _ in range(300)
    )
    assert within(picked, 300 * 20 * 60, 0.15)


def test_eighty_ten_ten_split() -> None:
    """Of the selected: [MASK] 80% (+ a random draw that hits it), random 10%, kept 10% (+ a random
    draw that hits the original)."""
    to_mask = kept = randomised = total = 0
    for ids, _, masked, labels in draws(600):
        chosen = labels != IGNORE
        total += int(chosen.sum())
        to_mask += int((masked[chosen] == MASK_ID).sum())
        kept += int((masked[chosen] == ids[chosen]).sum())
        randomised += int(((masked[chosen] != MASK_ID) & (masked[chosen] != ids[chosen])).sum())
    assert within(to_mask, total, 0.8 + 0.1 / VOCAB)
    assert within(kept, total, 0.1 + 0.1 / VOCAB)
    assert within(randomised, total, 0.1 * (VOCAB - 2) / VOCAB)


def test_specials_and_padding_never_selected_and_labels_are_originals() -> None:
    for ids, never, masked, labels in draws(200):
        chosen = labels != IGNORE
        assert not (chosen & never).any()
        assert torch.equal(masked[never], ids[never]), "specials and padding are never corrupted"
        assert torch.equal(labels[chosen], ids[chosen])
        assert (labels[~chosen] == IGNORE).all()
        assert torch.equal(masked[~chosen], ids[~chosen]), "only selected positions change"


def test_rows_without_maskable_tokens_and_purity() -> None:
    ids, never = rows([3, 4])
    never[0] = True  # a row of specials only
    before = ids.clone()
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    masked, labels = bert_mask(ids, never, VOCAB, MASK_ID, g1)
    again = bert_mask(ids, never, VOCAB, MASK_ID, g2)
    assert torch.equal(ids, before), "the input is not modified"
    assert (labels[0] == IGNORE).all() and torch.equal(masked[0], ids[0])
    assert (labels[1] != IGNORE).any()
    assert torch.equal(masked, again[0]) and torch.equal(labels, again[1]), "same generator state, same draw"


@pytest.mark.parametrize("p", [0.0, 1.5])
def test_bad_probability_is_refused(p: float) -> None:
    ids, never = rows([3])
    with pytest.raises(ValueError, match="mask probability"):
        bert_mask(ids, never, VOCAB, MASK_ID, None, p)
