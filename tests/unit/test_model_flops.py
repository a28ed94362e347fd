"""UniGen's MFU numerator (mvlp_core/model/unigen/flops.py), counted on the host from the batch,
against torch's FLOP counter over a real forward and backward: matrix multiplies and attention of
every row the forward runs, derived [match] rows included, trained, frozen-with-gradient and
frozen towers each at their own factor."""

from __future__ import annotations

import pytest
import torch
from _model_world import examples, single_thread, tiny_spec, tokenizers  # noqa: F401
from torch.utils.flop_counter import FlopCounterMode

from mvlp_core.model.unigen import build_model, collate


def measured_and_counted(freeze: list[str]) -> tuple[float, float]:
    torch.manual_seed(0)
    spec = tiny_spec(freeze=freeze)
    model = build_model(spec, tokenizers())
    for tower in (
        model.image_encoder.vision_model,
        model.image_encoder.qformer,
        model.text_encoder,
        model.decoder,
    ):
        tower.set_attn_implementation("eager")  # torch counts eager attention's matmuls, not CPU SDPA's
    batch = collate(examples(spec, 16, seed=1), tokenizers(), spec)
    # no padding: torch counts the padded shapes the kernels run, the count only real tokens
    for key in ("enc_mask", "itc_mask", "dec_mask"):
        batch[key] = torch.ones_like(batch[key])
    batch["labels"] = batch["dec_ids"].clone()
    counted = model.train_flops(batch)
    with FlopCounterMode(display=False) as counter:
        model(batch)["loss"].backward()
    return float(counter.get_total_flops()), counted


@pytest.mark.parametrize("freeze", [["decoder.middle"], ["vision", "decoder.middle"]])
def test_counted_flops_match_torchs_count_of_the_step(freeze: list[str]) -> None:
    measured, counted = measured_and_counted(freeze)
    # what the count leaves out is work on nothing: the decoder prefix projections over rows'
    # empty image slots, the small contrastive projections and similarity matrix
    assert 0.92 * measured <= counted <= measured


def test_a_frozen_vision_tower_counts_its_forward_only() -> None:
    trained_measured, trained = measured_and_counted(["decoder.middle"])
    frozen_measured, frozen = measured_and_counted(["vision", "decoder.middle"])
    assert frozen < trained and frozen_measured < trained_measured
    assert (trained - frozen) == pytest.approx(trained_measured - frozen_measured, rel=0.05)


def test_a_frozen_vision_tower_runs_without_autograd_and_a_trained_one_with() -> None:
    spec = tiny_spec(freeze=["vision", "decoder.middle"])
    model = build_model(spec, tokenizers())
    pixels = collate(examples(spec, 2, tasks=("cap",)), tokenizers(), spec)["pixel_values"]
    seen = []
    model.image_encoder.vision_model.register_forward_hook(
        lambda m, i, o: seen.append(o.last_hidden_state.requires_grad)
    )
    model.image_encoder(pixels)
    for p in model.image_encoder.vision_model.parameters():
        p.requires_grad_(True)  # unfrozen later (a fine-tuning recipe): gradients reach it again
    model.image_encoder(pixels)
    assert seen == [False, True]
