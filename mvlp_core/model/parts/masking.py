"""BERT's masked-language-model corruption (Devlin et al. 2019), as a pure function of the token
ids and a `torch.Generator`, so every family masks alike and tests can replay a draw.

Selection: each maskable position (not a special token, not padding) is selected with probability
`p`, independently (as ALBEF's and the wsmVLP code's `mask`); a row that has maskable positions but
drew none gets one of them, chosen uniformly, so every such row trains the MLM head (BERT's "at
least one prediction"). The expected number selected in a row with n maskable positions is thus
n·p + (1 − p)^n. Of the selected positions 80% become `mask_id`, 10% a token drawn uniformly from
[0, vocab_size) and 10% stay as they are; the labels hold the original id at every selected
position and -100 (ignored by cross-entropy) elsewhere.
"""

from __future__ import annotations

import torch

IGNORE = -100


def bert_mask(
    ids: torch.Tensor,
    special_mask: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    generator: torch.Generator | None,
    p: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked_ids, labels) for token ids [B, L]; `special_mask` [B, L] is true where a position
    may never be selected (special tokens and padding). `ids` is left unchanged."""
    if ids.shape != special_mask.shape:
        raise ValueError(f"ids {tuple(ids.shape)} and special_mask {tuple(special_mask.shape)} differ")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"mask probability {p} is not in (0, 1]")
    device = ids.device
    maskable = ~special_mask.bool()
    draw = torch.rand(ids.shape, generator=generator).to(device)
    selected = (draw < p) & maskable
    # rows with maskable tokens but no selection: select one of them uniformly
    empty = maskable.any(dim=1) & ~selected.any(dim=1)
    if empty.any():
        scores = torch.rand(ids.shape, generator=generator).to(device).masked_fill(~maskable, -1.0)
        pick = scores.argmax(dim=1)
        rows = empty.nonzero(as_tuple=True)[0]
        selected[rows, pick[rows]] = True
    action = torch.rand(ids.shape, generator=generator).to(device)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator).to(device)
    masked = ids.clone()
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    masked[to_mask] = mask_id
    masked[to_random] = random_ids[to_random]
    labels = ids.masked_fill(~selected, IGNORE)
    return masked, labels
