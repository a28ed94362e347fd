"""Frozen towers with nothing trainable upstream (the frozen ViT of either family), kept as BLIP-2
keeps its image encoder: eval mode through `model.train()`, no autograd graph, cast once to bf16
where the step autocasts to it (`loop.autocast_for`); and every Hugging Face tower pinned to SDPA.
CPU autocast stands in for CUDA's: the cast and the dtypes meeting at the tower's edge are the same."""

from __future__ import annotations

import copy

import pytest
import torch
from _model_world import examples, single_thread, tiny_spec, tokenizers  # noqa: F401

from mvlp_core.model.unigen import UniGen, build_model, collate
from mvlp_core.train import loop

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _unigen(freeze: list[str]) -> UniGen:
    torch.manual_seed(0)
    return build_model(tiny_spec(freeze=freeze), tokenizers())


def _unigen_batch(model: UniGen, n: int = 8) -> dict:
    return collate(examples(model.spec, n), model.tokenizers, model.spec)


def _wsmvlp(freeze_vision: bool):
    from test_wsmvlp_model import micro

    return micro(freeze_vision=freeze_vision)


def _dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


@pytest.mark.parametrize("family", ["unigen", "wsmvlp"])
def test_a_frozen_vit_stays_in_eval_mode_and_builds_no_graph(family) -> None:
    model = _unigen(["vision"]) if family == "unigen" else _wsmvlp(True)
    vit = model.image_encoder.vision_model if family == "unigen" else model.vision
    assert model.frozen_towers() == [vit]
    model.train()
    assert not vit.training and all(not m.training for m in vit.modules())
    others = [m for name, m in model.named_children() if m is not vit and "image_encoder" not in name]
    assert others and all(m.training for m in others)
    pixels = torch.randint(0, 256, (2, 3, model.spec.image_size, model.spec.image_size), dtype=torch.uint8)
    if family == "unigen":
        assert model.image_encoder(pixels).requires_grad  # the Q-Former above the ViT trains
        norm = model.image_encoder.pixel_norm
        assert vit(pixel_values=norm(pixels)).last_hidden_state.requires_grad is False
    else:
        assert model.encode_image(pixels).requires_grad is False  # no graph kept for the frozen ViT

    for p in vit.parameters():  # fine-tuning unfreezes it: train mode again
        p.requires_grad_(True)
    assert model.frozen_towers() == []
    model.train()
    assert vit.training


def test_a_trained_vit_is_no_frozen_tower() -> None:
    assert _unigen(["decoder.middle"]).frozen_towers() == []
    assert _wsmvlp(False).frozen_towers() == []


@pytest.mark.parametrize("family", ["unigen", "wsmvlp"])
def test_bf16_on_cuda_casts_the_frozen_vit_once_and_nothing_else(family) -> None:
    model = _unigen(["vision", "decoder.middle"]) if family == "unigen" else _wsmvlp(True)
    vit = model.frozen_towers()[0]
    for device, bf16 in ((CPU, True), (CUDA, False)):  # full precision: nothing cast, no autocast
        assert loop.autocast_for(model, bf16, device) is not None
        assert _dtypes(model) == {torch.float32}
    loop.autocast_for(model, True, CUDA)
    assert _dtypes(vit) == {torch.bfloat16}
    rest = [p for n, p in model.named_parameters() if not any(p is q for q in vit.parameters())]
    assert rest and {p.dtype for p in rest} == {torch.float32}  # frozen decoder layers included


def _step(model, batch, autocast: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # in-batch negatives draw from the global RNG
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(batch)["loss"]
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("family", ["unigen", "wsmvlp"])
def test_the_cast_vit_trains_the_rest_as_autocast_alone_does(family) -> None:
    """Under bf16 autocast the model with its ViT cast once gives the loss of the uncast model within
    bf16's rounding, gradients reach what trains and none the ViT; it also runs without autocast
    (the ViT hands the rest their own dtype)."""
    if family == "unigen":
        model = _unigen(["vision"])
        batch = _unigen_batch(model)
    else:
        from test_wsmvlp_model import batch as wsmvlp_batch

        model = _wsmvlp(True)
        batch = wsmvlp_batch(model)
    cast = copy.deepcopy(model)
    loop.autocast_for(cast, True, CUDA)
    ref_loss, ref_grads = _step(model, batch, autocast=True)
    loss, grads = _step(cast, batch, autocast=True)
    assert loss == pytest.approx(ref_loss, rel=0.03)
    assert set(grads) == set(ref_grads) and grads
    vit_names = {
        n for n, _ in cast.named_parameters() if n.startswith(("image_encoder.vision_model.", "vision."))
    }
    assert vit_names and not vit_names & set(grads)
    assert all(g.dtype == torch.float32 for g in grads.values())
    plain_loss, _ = _step(cast, batch, autocast=False)
    assert torch.isfinite(torch.tensor(plain_loss))


def test_a_model_saved_with_its_vit_cast_reloads_in_full_precision(tmp_path) -> None:
    model = _unigen(["vision"])
    loop.autocast_for(model, True, CUDA)
    model.save_pretrained(tmp_path / "m")
    back = UniGen.from_pretrained(tmp_path / "m")
    assert _dtypes(back) == {torch.float32}
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a.float(), b), name  # the bf16 values it trained with, exactly


def test_every_hugging_face_tower_runs_sdpa() -> None:
    unigen = _unigen(["vision"])
    towers = [unigen.image_encoder.vision_model, unigen.image_encoder.qformer, unigen.text_encoder]
    towers += [unigen.decoder, _wsmvlp(True).vision]
    assert [t.config._attn_implementation for t in towers] == ["sdpa"] * len(towers)
