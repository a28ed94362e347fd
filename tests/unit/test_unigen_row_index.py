"""UniGen selects the rows each encoder reads through indices collate makes on the host, so a
training step does not ask the device how many rows there are (each such question is a GPU
synchronisation): the same losses and gradients as selecting by the masks, a batch cut row-wise
after collate falling back to its masks, and no synchronisation left in the selections."""

from __future__ import annotations

import pytest
import torch
from _model_world import LANGS, caption, examples, scenes, single_thread, tiny_spec, tokenizers  # noqa: F401

from benchmarks.host_syncs import HostSyncs
from mvlp_core.model.unigen import Example, build_model, collate

SELECTIONS = (
    "_index",
    "_encode_text",
    "_encode_images",
    "_primary_rows",
    "forward",
    "_text_pairs",
    "_consistency",
)


@pytest.fixture(scope="module")
def world():
    tok = tokenizers()
    # the cross-lingual consistency and sentence losses read text-only parallel pairs
    spec = tiny_spec(freeze=["vision"], delta_xlc=1.0, epsilon_sent=1.0)
    pairs = [
        Example("trans", None, caption(s, LANGS[1]), LANGS[1], caption(s), caption(s))
        for s in scenes(3, seed=7)
    ]
    batch = collate(examples(spec, 12) + pairs, tok, spec)
    torch.manual_seed(0)
    return build_model(spec, tok), batch


def _step(model, batch) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the [match] negatives and the consistency prompts draw from it
    out = model(batch)
    out["loss"].backward()
    losses = {k: v.item() for k, v in out.items() if k.startswith("loss")}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses, grads


def _masks_only(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("rows_")}


def test_host_indices_select_what_the_masks_select(world) -> None:
    model, batch = world
    assert batch["rows_pairs"].numel() == 3 and batch["rows_itc"].numel() > 2
    indexed, by_masks = _step(model, batch), _step(model, _masks_only(batch))
    assert indexed[0] == pytest.approx(by_masks[0], rel=1e-6)
    assert {"loss_xlc", "loss_sent", "loss_itc", "loss_match"} <= set(indexed[0])
    assert indexed[1].keys() == by_masks[1].keys()
    for name, grad in indexed[1].items():
        torch.testing.assert_close(grad, by_masks[1][name], msg=name)


def test_a_batch_cut_after_collate_reads_its_masks(world) -> None:
    model, batch = world
    rows = slice(4, 9)
    cut = {k: v[rows] for k, v in batch.items()}  # the indices are stale now
    assert _step(model, cut)[0] == pytest.approx(_step(model, _masks_only(cut))[0], rel=1e-6)


def test_the_selections_make_no_host_sync(world) -> None:
    model, batch = world
    counts = {}
    for name, b in (("indexed", batch), ("masks", _masks_only(batch))):
        with HostSyncs() as seen:
            _step(model, b)
        counts[name] = seen
    in_selections = [
        w
        for (_, w) in counts["indexed"].hits
        if w.startswith("mvlp_core/model/unigen/model.py:") and any(f" {f}:" in w for f in SELECTIONS)
    ]
    assert not in_selections, counts["indexed"].table()
    assert counts["indexed"].total < counts["masks"].total  # the masks' selections did sync
