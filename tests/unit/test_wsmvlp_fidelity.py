"""wsmVLP's fidelity tests (seed-systems §4): what would fail on an imitation.

1. Unified contrastive learning: both losses equal ½[CE(S/τ, I) + CE(Sᵀ/τ, I)] computed by hand from
   the uni-modal [CLS] features through the one `text_proj` (and `vision_proj`), τ the one
   Parameter clamped to its range; τ and `text_proj` get gradient from each loss alone.
2. Pluggable cross-attention: xMLM logits do not move when every cross-attention weight does, TLM and
   VLM logits do, and TLM and VLM run the very same cross-attention modules.
3. ITM: negatives are never a positive, follow softmax of the contrastive logits, and the loss is CE
   over B positives + 2B negatives on the fused [CLS].
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from test_wsmvlp_model import batch, caption, micro, render, single_thread  # noqa: F401

import mvlp_core.model.wsmvlp.model as wsmvlp_model
from mvlp_core.model.parts.masking import IGNORE
from mvlp_core.model.wsmvlp import collate, itm_negatives

Z = 3.29  # two-sided 99.9%


def infonce(s: torch.Tensor) -> torch.Tensor:
    """Eq. 1: CE(S, I) + CE(Sᵀ, I) for logits S whose diagonal holds the positives."""
    target = torch.arange(s.shape[0])
    return F.cross_entropy(s, target) + F.cross_entropy(s.t(), target)


def uni_cls(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The text encoder's [CLS] through text_proj, normalised."""
    return F.normalize(model.text_proj(model.encode_text(ids, mask)[:, 0]), dim=-1)


def hand_losses(model, b: dict, tau: float, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    img, par = b["image"], b["parallel"]
    v = F.normalize(model.vision_proj(model.encode_image(img["pixel_values"])[:, 0]), dim=-1)
    t = uni_cls(model, img[key], img["mask"])
    a, c = uni_cls(model, par[f"{key}_a"], par["mask_a"]), uni_cls(model, par[f"{key}_b"], par["mask_b"])
    return infonce(v @ t.t() / tau), infonce(a @ c.t() / tau)


def perturb_cross_attention(model, scale: float = 0.5) -> None:
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for module in model.cross_attention_modules():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale)


# ---------------------------------------------------------------- 1. unified contrastive learning
@pytest.mark.parametrize("ucl_text", ["masked", "clean"])
def test_contrastive_losses_equal_the_hand_computation(ucl_text: str) -> None:
    model = micro(ucl_text=ucl_text).eval()
    b = batch(model, n_image=5, n_parallel=6, n_mono=2)
    key = "masked_ids" if ucl_text == "masked" else "ids"
    with torch.no_grad():
        for raw, tau in ((None, 0.07), (3.0, 0.5), (1e-6, 0.001)):  # in range, clamped above and below
            if raw is not None:
                model.temp.fill_(raw)
            out = model(b)
            image, text = hand_losses(model, b, tau, key)
            assert torch.allclose(out["loss_ucl_image"], image, atol=1e-5), (
                tau,
                out["loss_ucl_image"],
                image,
            )
            assert torch.allclose(out["loss_ucl_text"], text, atol=1e-5), (tau, out["loss_ucl_text"], text)
    # the other text (clean vs masked) gives another value: the test tells the two apart
    other = "ids" if key == "masked_ids" else "masked_ids"
    with torch.no_grad():
        assert not torch.allclose(out["loss_ucl_text"], hand_losses(model, b, 0.001, other)[1], atol=1e-4)
    # the released code halves each: an option
    halved = micro(ucl_text=ucl_text, ucl_halved=True).eval()
    halved.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = halved(b)
        image, text = hand_losses(halved, b, 0.001, key)
    assert torch.allclose(out["loss_ucl_image"], image / 2, atol=1e-5)
    assert torch.allclose(out["loss_ucl_text"], text / 2, atol=1e-5)


def test_contrastive_features_are_uni_modal() -> None:
    """The unified encoder (cross-attention included) plays no part in either contrastive loss."""
    model = micro().eval()
    b = batch(model, n_image=4, n_parallel=4, n_mono=2)
    with torch.no_grad():
        before = model(b)
        perturb_cross_attention(model)
        for p in model.fusion_layers.parameters():
            p.add_(0.3)
        after = model(b)
    for k in ("loss_ucl_image", "loss_ucl_text"):
        assert torch.equal(before[k], after[k]), k
    assert not torch.allclose(before["loss_vlm"], after["loss_vlm"])


def test_one_temperature_and_one_text_projection_learn_from_each_loss() -> None:
    model = micro().train()
    names = [n for n, _ in model.named_parameters()]
    assert [n for n in names if "temp" in n] == ["temp"]
    into_space = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m.out_features == model.spec.embed_dim
    ]
    assert into_space == ["vision_proj", "text_proj"], (
        "one projection per modality into the contrastive space"
    )
    out = model(batch(model, n_image=4, n_parallel=4, n_mono=2))
    wanted = [model.temp, model.text_proj.weight, model.vision_proj.weight]
    g_image = torch.autograd.grad(out["loss_ucl_image"], wanted, retain_graph=True, allow_unused=True)
    g_text = torch.autograd.grad(out["loss_ucl_text"], wanted, retain_graph=True, allow_unused=True)
    for grads in (g_image, g_text):
        assert grads[0] is not None and float(grads[0].abs()) > 0, "τ learns from this loss alone"
        assert grads[1] is not None and float(grads[1].abs().sum()) > 0, (
            "text_proj learns from this loss alone"
        )
    assert g_image[2] is not None and float(g_image[2].abs().sum()) > 0
    assert g_text[2] is None, "translation pairs never reach vision_proj"


# ---------------------------------------------------------------- 2. pluggable cross-attention
def test_cross_attention_is_skipped_for_mono_and_shared_by_tlm_and_vlm() -> None:
    model = micro().eval()
    b = batch(model, n_image=4, n_parallel=4, n_mono=4)
    crosses = model.cross_attention_modules()
    assert crosses and all(c is not None for c in crosses)
    assert all(layer.crossattention is not layer.attention for layer in model.fusion_layers)
    seen: list[int] = []
    hooks = [c.register_forward_hook(lambda m, i, o: seen.append(id(m))) for c in crosses]
    try:
        used = {}
        for stream in ("mono", "parallel", "image"):
            seen.clear()
            with torch.no_grad():
                model({stream: b[stream]})
            used[stream] = set(seen)
    finally:
        for h in hooks:
            h.remove()
    assert used["mono"] == set(), "monolingual text skips every cross-attention"
    assert used["parallel"] == used["image"] == {id(c) for c in crosses}, "TLM and VLM use the same modules"

    with torch.no_grad():
        before = model(b, return_logits=True)
        direct = model.lm_head(
            model.unify(model.encode_text(b["mono"]["masked_ids"], b["mono"]["mask"]), b["mono"]["mask"])
        )
        perturb_cross_attention(model)
        after = model(b, return_logits=True)
    assert torch.allclose(before["logits_xmlm"], direct[b["mono"]["labels"] != IGNORE], atol=1e-5)
    assert torch.equal(before["logits_xmlm"], after["logits_xmlm"]), "xMLM is invariant to cross-attention"
    for task in ("tlm", "vlm"):
        change = (before[f"logits_{task}"] - after[f"logits_{task}"]).abs().max()
        assert change > 1e-2, f"{task} logits do not depend on the cross-attention"


@pytest.mark.parametrize("condition", ["clean", "masked"])
def test_tlm_conditions_each_side_on_the_other_unmasked_or_as_masked(condition: str) -> None:
    """Eq. 2: P(t_m^{l_i} | t_\\m^{l_i}, t^{l_j}), the other side whole (the default); the released
    code's option attends to the other side as masked for its own MLM. Changing only side b's
    masked copy moves side a's TLM logits in the second case and not in the first, and changing
    only side b's clean text the other way round."""
    model = micro(tlm_condition=condition, ucl_text="masked").eval()
    b = batch(model, n_image=0, n_parallel=4, n_mono=0)
    par = b["parallel"]
    n_a = int((par["labels_a"] != IGNORE).sum())
    new_masked = {**par, "masked_ids_b": par["masked_ids_b"].roll(1, 0)}
    new_clean = {**par, "ids_b": par["ids_b"].roll(1, 0)}
    with torch.no_grad():
        base = model({"parallel": par}, return_logits=True)["logits_tlm"][:n_a]
        by_masked = model({"parallel": new_masked}, return_logits=True)["logits_tlm"][:n_a]
        by_clean = model({"parallel": new_clean}, return_logits=True)["logits_tlm"][:n_a]
    reads_masked = (base - by_masked).abs().max() > 1e-3
    reads_clean = (base - by_clean).abs().max() > 1e-3
    assert (reads_clean, reads_masked) == ((True, False) if condition == "clean" else (False, True))


def test_each_side_is_conditioned_on_the_other_and_captions_on_the_image() -> None:
    model = micro().eval()
    b = batch(model, n_image=4, n_parallel=4, n_mono=2)
    par = b["parallel"]
    n_a = int((par["labels_a"] != IGNORE).sum())
    swapped = {**par, **{f"{k}_b": par[f"{k}_b"].roll(1, 0) for k in ("ids", "mask", "masked_ids", "labels")}}
    rolled = {**b["image"], "pixel_values": b["image"]["pixel_values"].roll(1, 0)}
    with torch.no_grad():
        base = model(b, return_logits=True)
        other = model({"parallel": swapped, "image": rolled}, return_logits=True)
    assert (base["logits_tlm"][:n_a] - other["logits_tlm"][:n_a]).abs().max() > 1e-3, "side a reads side b"
    assert (base["logits_vlm"] - other["logits_vlm"]).abs().max() > 1e-3, "the caption reads its image"


# ---------------------------------------------------------------- 3. ITM hard negatives
def test_itm_negatives_follow_the_softmax_and_are_never_positive() -> None:
    logits = torch.tensor(
        [
            [5.0, 1.0, 0.0, -1.0, 0.5],
            [0.3, 4.0, 2.0, 0.0, 1.0],
            [1.5, -0.5, 3.0, 1.0, 0.0],
            [0.0, 0.0, 2.5, 6.0, -2.0],
            [1.0, 2.0, 0.0, 1.0, 2.0],
        ]
    )
    positive = torch.eye(5, dtype=torch.bool)
    positive[0, 4] = positive[4, 0] = True  # texts 0 and 4 are the same caption
    g = torch.Generator().manual_seed(0)
    draws = 3000
    i2t, t2i = torch.zeros(5, 5), torch.zeros(5, 5)
    for _ in range(draws):
        img, txt = itm_negatives(logits, positive, g)
        assert not positive[img, txt].any(), "a negative is never a positive"
        assert torch.equal(img[:5], torch.arange(5)) and torch.equal(txt[5:], torch.arange(5))
        i2t[img[:5], txt[:5]] += 1
        t2i[txt[5:], img[5:]] += 1
    for counts, scores, pos in ((i2t, logits, positive), (t2i, logits.t(), positive.t())):
        expected = F.softmax(scores, dim=1).masked_fill(pos, 0.0)
        expected = expected / expected.sum(dim=1, keepdim=True)
        for row in range(5):
            for col in range(5):
                p = float(expected[row, col])
                bound = Z * math.sqrt(draws * p * (1 - p)) + 1
                assert abs(float(counts[row, col]) - draws * p) <= bound, (
                    row,
                    col,
                    counts[row, col],
                    draws * p,
                )


def test_itm_loss_is_ce_over_positives_and_mined_negatives(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the model: the sampler gets S/τ of the uni-modal features and the identical-caption
    mask; the loss is CE over B positives (label 1) + 2B negatives (label 0) on the fused [CLS]."""
    model = micro(ucl_text="clean").eval()
    transform, rng = model.image_transform(), random.Random(0)
    colours = ["red", "green", "blue", "yellow", "red"]  # two red squares with the same caption
    raw = [(transform(render(c, rng)), caption(c)) for c in colours]
    b = collate({"image": raw}, model.tokenizer, model.spec, torch.Generator().manual_seed(1))
    calls = []

    def recording(logits, positive, generator=None):
        pairs = itm_negatives(logits, positive, generator)
        calls.append((logits, positive, pairs))
        return pairs

    monkeypatch.setattr(wsmvlp_model, "itm_negatives", recording)
    model.generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        out = model(b)
        ((logits, positive, (neg_img, neg_txt)),) = calls
        im = b["image"]
        v = F.normalize(model.vision_proj(model.encode_image(im["pixel_values"])[:, 0]), dim=-1)
        t = uni_cls(model, im["ids"], im["mask"])
        assert torch.allclose(logits, v @ t.t() / 0.07, atol=1e-5), (
            "sampled ∝ softmax of the contrastive logits"
        )
        assert positive[0, 4] and positive[4, 0] and positive.diagonal().all() and int(positive.sum()) == 7
        assert not positive[neg_img, neg_txt].any()
        assert len(neg_img) == 2 * 5
        px, ids, mask = im["pixel_values"], im["ids"], im["mask"]
        fused = torch.cat([model.fused(px, ids, mask), model.fused(px[neg_img], ids[neg_txt], mask[neg_txt])])
        labels = torch.cat([torch.ones(5), torch.zeros(10)]).long()
        expected = F.cross_entropy(model.itm_head(fused), labels)
    assert torch.allclose(out["loss_itm"], expected, atol=1e-5)
