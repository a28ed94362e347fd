"""UniGen forward/backward on the tiny model: every task, gradients where (and only where) they
belong, loss only on target positions, and collate that survives odd examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _model_world import examples, single_thread, tiny_spec, tokenizers  # noqa: F401

from mvlp_core.model.unigen import TASK_IDS, Example, build_model, collate

LOSSES = ("loss_trans", "loss_cap", "loss_qus", "loss_match", "loss_itc")


@pytest.fixture(scope="module")
def tok():
    return tokenizers()


def test_every_task_trains_and_gradients_reach_exactly_the_trainable_parts(tok):
    # 3 decoder layers: decoder.middle is layer 1; the ViT is frozen as in the paper
    spec = tiny_spec(freeze=["vision", "decoder.middle"], dims={"decoder_layers": 3})
    torch.manual_seed(0)
    model = build_model(spec, tok)
    batch = collate(examples(spec, 8), tok, spec)
    assert set(batch["task"].tolist()) == set(TASK_IDS.values())
    out = model(batch)
    for name in LOSSES:
        assert out[name].dim() == 0 and math.isfinite(out[name].item()) and out[name].item() > 0, name
    expected = (
        out["loss_trans"]
        + out["loss_cap"]
        + spec.alpha_qus * out["loss_qus"]
        + spec.beta_match * out["loss_match"]
        + spec.gamma_itc * out["loss_itc"]
    )
    assert torch.allclose(out["loss"], expected)
    assert out["task_rows"][TASK_IDS["match"]] > (batch["task"] == TASK_IDS["match"]).sum()  # + derived rows
    out["loss"].backward()

    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("image_encoder.vision_model.") for n in frozen)
    assert any(n.startswith("decoder.transformer.h.1.") for n in frozen)
    assert not any(n.startswith(("decoder.transformer.h.0.", "decoder.transformer.h.2.")) for n in frozen)
    for name, p in model.named_parameters():
        if name.startswith(model.HEAD_PARAMS):  # only examples with several images use them
            assert p.grad is None
        elif p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    assert model.num_params(trainable_only=True) < model.num_params() < 5_000_000


def test_contrastive_weight_scales_only_the_contrastive_term(tok):
    batch = None
    outs = []
    for gamma in (1.0, 3.0):
        spec = tiny_spec(gamma_itc=gamma)
        torch.manual_seed(0)
        model = build_model(spec, tok)
        batch = batch or collate(examples(spec, 8), tok, spec)
        torch.manual_seed(1)  # the same hard negatives both times
        outs.append(model(batch))
    assert torch.allclose(outs[1]["loss"] - outs[0]["loss"], 2 * outs[0]["loss_itc"], atol=1e-5)


def test_match_negatives_are_drawn_from_the_cosines_over_the_temperature(tok, monkeypatch):
    """ALBEF samples [match] negatives ∝ softmax(s/τ): the cosines s over the contrastive
    temperature τ, whose spread makes a near-duplicate caption the likely pick; raw cosines
    (|s| <= 1) would draw almost uniformly. The same forward at two temperatures: the logits the
    negatives are drawn from scale as 1/τ."""
    from mvlp_core.model.unigen import model as unigen_model

    seen, original = [], unigen_model.mine_hard_negatives

    def mine(similarity, positive, generator=None):
        seen.append(similarity.detach())
        return original(similarity, positive, generator)

    monkeypatch.setattr(unigen_model, "mine_hard_negatives", mine)
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok)
    batch = collate(examples(spec, 8), tok, spec)
    for tau in (0.07, 0.35):
        with torch.no_grad():
            model.temperature.fill_(tau)
        torch.manual_seed(1)  # the same dropout: the same features
        model(batch)
    low, high = seen
    assert torch.allclose(low * 0.07, high * 0.35, atol=1e-5) and not torch.allclose(low, high)
    assert (low * 0.07).abs().max() <= 1 + 1e-5  # cosines


def test_the_contrastive_text_feature_is_the_first_tokens_state_or_the_average(tok):
    """The paper's contrastive similarity is between two tokens (the image's first query, the
    text's first token): `itc_text: cls`, the default; `mean` averages the unmasked states."""
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    for itc_text, pooled in (("cls", "first"), ("mean", None)):
        spec = tiny_spec(itc_text=itc_text)
        torch.manual_seed(0)
        model = build_model(spec, tok)
        states = torch.randn(2, 5, model.text_proj.in_features, generator=torch.Generator().manual_seed(1))
        pooled = states[:, 0] if pooled == "first" else None
        if pooled is None:
            pooled = torch.stack([states[0, :3].mean(0), states[1].mean(0)])
        expected = F.normalize(model.text_proj(pooled), dim=-1)
        assert torch.allclose(model._text_cls(states, mask), expected, atol=1e-6), itc_text
    assert tiny_spec().itc_text == "cls"


def _with_text_pairs(spec, sources: list[str]) -> list[Example]:
    """Image examples, plus text-only pairs whose English side (the caption) reads "a red circle"."""
    pairs = [Example("trans", None, src, "de", "a red circle", caption="a red circle") for src in sources]
    return [*examples(spec, 6), *pairs]


def test_consistency_loss_is_zero_for_identical_sides_and_trains_the_source_reading(tok):
    spec = tiny_spec(delta_xlc=2.0)
    torch.manual_seed(0)
    model = build_model(spec, tok)
    same = collate(_with_text_pairs(spec, ["a red circle", "a red circle"]), tok, spec)
    assert model(same)["loss_xlc"].abs() < 1e-6  # the source reads exactly as its English side
    other = collate(_with_text_pairs(spec, ["ein roter Kreis", "roter Kreis links"]), tok, spec)
    torch.manual_seed(1)
    out = model(other)
    assert out["loss_xlc"] > 0
    off = build_model(tiny_spec(), tok)
    off.load_state_dict(model.state_dict())
    torch.manual_seed(1)  # the same dropout and hard negatives
    base = off(other)
    assert "loss_xlc" not in base
    assert torch.allclose(out["loss"] - base["loss"], 2.0 * out["loss_xlc"], atol=1e-5)
    model.zero_grad()
    out["loss_xlc"].backward()
    assert model.text_encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.temperature.grad is None or model.temperature.grad == 0  # contrastive untouched


def _parallel(spec, pairs: list[tuple[str, str]]) -> list[Example]:
    """Image examples plus text-only (source, English) pairs."""
    return [*examples(spec, 6), *(Example("trans", None, src, "de", en, caption=en) for src, en in pairs)]


def test_sentence_alignment_pulls_only_the_source_side_to_its_english_average(tok):
    spec = tiny_spec(epsilon_sent=3.0)
    torch.manual_seed(0)
    model = build_model(spec, tok)
    english = ["a red circle", "a blue square to the left of a star"]
    same = collate(_parallel(spec, [(en, en) for en in english]), tok, spec)
    assert model(same)["loss_sent"].abs() < 1e-10
    sources = ["ein roter Kreis", "ein blaues Quadrat links von einem Stern"]
    other = collate(_parallel(spec, list(zip(sources, english))), tok, spec)
    torch.manual_seed(1)
    out = model(other)
    assert out["loss_sent"] > 0
    off = build_model(tiny_spec(), tok)
    off.load_state_dict(model.state_dict())
    torch.manual_seed(1)  # the same hard negatives
    base = off(other)
    assert "loss_sent" not in base
    assert torch.allclose(out["loss"] - base["loss"], 3.0 * out["loss_sent"], atol=1e-5)
    model.zero_grad()
    out["loss_sent"].backward()
    grad = model.text_encoder.embeddings.word_embeddings.weight.grad
    src_ids = set(tok.encoder(" ".join(sources), add_special_tokens=False)["input_ids"])
    en_ids = set(tok.encoder(" ".join(english), add_special_tokens=False)["input_ids"]) - src_ids
    assert all(grad[i].abs().sum() > 0 for i in src_ids)
    assert en_ids and all(grad[i].abs().sum() == 0 for i in en_ids)  # the English side is the target
    assert model.decoder.transformer.wte.weight.grad is None  # the decoder plays no part


def _pair_examples(spec, n=4):
    """[match] examples over two images each (MaRVL's shape) and the single-image halves."""
    singles = [e for e in examples(spec, 4 * n, seed=3) if e.image is not None][: 2 * n]
    pairs = [
        Example("match", torch.stack([a.image, b.image]), a.caption, "en", "yes")
        for a, b in zip(singles[::2], singles[1::2])
    ]
    halves = [
        [Example("match", img, p.source, "en", "yes") for p in pairs for img in [p.image[k]]] for k in (0, 1)
    ]
    return pairs, halves


def test_several_images_are_read_one_at_a_time_and_their_likelihoods_mixed(tok):
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok).eval()
    pairs, (left, right) = _pair_examples(spec)
    pair_score = model.score_targets(collate(pairs, tok, spec))
    # a position embedding and gate of zeros: each image read as a lone one, p = (p_left + p_right) / 2
    lone = [model.score_targets(collate(half, tok, spec)) for half in (left, right)]
    mixed = torch.logsumexp(torch.stack(lone), dim=0) - math.log(2)
    assert torch.allclose(pair_score, mixed, atol=1e-4)
    swapped = [Example(p.task, p.image.flip(0), p.source, p.source_lang, p.target) for p in pairs]
    assert torch.allclose(model.score_targets(collate(swapped, tok, spec)), pair_score, atol=1e-4)
    # learned positions tell the left image from the right one
    with torch.no_grad():
        model.image_position.normal_(std=1.0)
    moved = model.score_targets(collate(swapped, tok, spec)) - model.score_targets(collate(pairs, tok, spec))
    assert moved.abs().max() > 1e-4


def test_the_text_gate_weights_each_image_by_what_the_statement_says(tok):
    """With the gate's bias set to favour image k, the pair's score is that image's lone one; with
    weights on the text, the mixture is no longer the uniform one."""
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok).eval()
    pairs, halves = _pair_examples(spec)
    lone = [model.score_targets(collate(half, tok, spec)) for half in halves]
    for k in (0, 1):
        with torch.no_grad():
            model.image_gate.bias.copy_(torch.tensor([30.0, -30.0]) * (1 if k == 0 else -1))
        assert torch.allclose(model.score_targets(collate(pairs, tok, spec)), lone[k], atol=1e-4)
    with torch.no_grad():
        model.image_gate.bias.zero_()
        model.image_gate.weight.normal_(std=5.0)
    mixed = torch.logsumexp(torch.stack(lone), dim=0) - math.log(2)
    assert (model.score_targets(collate(pairs, tok, spec)) - mixed).abs().max() > 1e-3


def test_training_on_image_pairs_reaches_the_position_embedding(tok):
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok)
    pairs, _ = _pair_examples(spec)
    batch = collate(pairs + [e for e in examples(spec, 4) if e.image is None], tok, spec)  # + text-only rows
    out = model(batch)
    assert out["loss_match"] > 0 and out["loss_trans"] > 0 and out["loss_itc"] == 0
    assert torch.allclose(
        out["loss_match"],
        -model.score_targets(batch)[batch["task"] == TASK_IDS["match"]].sum()
        / (batch["dec_mask"][batch["task"] == TASK_IDS["match"]].sum()),
        atol=1e-5,
    )
    out["loss"].backward()
    assert model.image_position.grad.abs().sum() > 0
    assert model.image_gate.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one image per example"):
        model.generate(collate(pairs, tok, spec))


def test_absent_tasks_contribute_zero_and_ddp_trains_on(tok, tmp_path):
    """A text-only step: the absent tasks add nothing and the image tower gets no gradient; under
    DDP with the GPU path's options the next (full) step still runs and reaches the image tower."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mvlp_core.train import grad_sync

    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok)
    text_only = [e for e in examples(spec, 8) if e.task == "trans"]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model, **grad_sync.ddp_options(model))
        out = ddp(collate(text_only, tok, spec))
        assert out["loss_trans"] > 0
        for name in ("loss_cap", "loss_qus", "loss_match", "loss_itc"):
            assert out[name].item() == 0.0, name
        assert torch.allclose(out["loss"], out["loss_trans"])
        out["loss"].backward()
        tower = [p for n, p in model.named_parameters() if n.startswith("image_encoder.") and p.requires_grad]
        assert tower and all(p.grad is None for p in tower)
        model.zero_grad(set_to_none=True)
        ddp(collate(examples(spec, 8), tok, spec))["loss"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower)
    finally:
        dist.destroy_process_group()


def test_loss_is_the_mean_over_target_tokens_only(tok):
    """[cap] prompt = Q query states + task token: rebuild the decoder input by hand and compare."""
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok).eval()
    example = next(e for e in examples(spec, 4) if e.task == "cap")
    example.caption = None
    batch = collate([example], tok, spec)
    out = model(batch)
    queries = model.image_encoder(batch["pixel_values"])
    target = batch["dec_ids"][0]
    wte = model.decoder.transformer.wte
    embeds = torch.cat(
        [model.image_to_decoder(queries)[0], wte(model.task_tokens[[TASK_IDS["cap"]]]), wte(target)]
    ).unsqueeze(0)
    logits = model.decoder(inputs_embeds=embeds).logits[0]
    q = spec.num_query_tokens
    manual = F.cross_entropy(logits[q : q + len(target)], target)
    assert torch.allclose(out["loss_cap"], manual, atol=1e-5)
    assert out["tokens"].item() == len(target)


def test_padding_and_masked_labels_do_not_change_the_loss(tok):
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok).eval()
    by_length = sorted(examples(spec, 12, tasks=("trans",)), key=lambda e: len(e.target))
    short, long = by_length[0], by_length[-1]
    alone = [model.score_targets(collate([e], tok, spec)) for e in (short, long)]
    together = model.score_targets(collate([short, long], tok, spec))
    assert torch.allclose(torch.cat(alone), together, atol=1e-4)

    batch = collate([short, long], tok, spec)
    pad = batch["labels"] == -100
    assert pad.any() and (batch["dec_ids"][pad] == tok.decoder.pad_token_id).all()
    changed = dict(batch, dec_ids=batch["dec_ids"].masked_fill(pad, 7))  # garbage under the padding
    assert torch.allclose(model(changed)["loss"], model(batch)["loss"], atol=1e-5)
    # masking a target token's label drops it from the loss but not from the decoder's input:
    # log p(target) = log p(rest | first token seen) + log p(first token)
    rest, first = batch["labels"].clone(), torch.full_like(batch["labels"], -100)
    rest[:, 0], first[:, 0] = -100, batch["labels"][:, 0]
    full = model.score_targets(batch)
    split = model.score_targets(dict(batch, labels=rest)) + model.score_targets(dict(batch, labels=first))
    assert torch.allclose(full, split, atol=1e-4)
    assert model(dict(batch, labels=rest))["tokens"] == model(batch)["tokens"] - 2


def test_the_prompt_conditions_the_target(tok):
    """Changing only the encoder text (the prompt) changes the target's likelihood."""
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok).eval()
    a, b = examples(spec, 8, tasks=("trans",))[:2]
    swapped = Example("trans", None, b.source, b.source_lang, a.target)
    scores = model.score_targets(collate([a, swapped], tok, spec))
    assert not torch.isclose(scores[0], scores[1])


def test_collate_survives_odd_examples(tok):
    spec = tiny_spec()
    good = examples(spec, 4)
    image = good[0].image
    odd = [
        Example("cap", image, "", "en", "", caption=""),  # empty everything
        Example("trans", None, "x " * 200_000, "de", "y " * 100_000),  # huge texts
        Example("qus", None, "what is it?", "en", "a circle"),  # missing image
        Example("match", torch.stack([image, image]), "two images", "en", "no"),  # K = 2
        good[1],
    ]
    batch = collate(odd, tok, spec)
    assert batch["pixel_values"].shape == (5, 2, 3, spec.image_size, spec.image_size)
    assert batch["has_image"].tolist() == [True, False, False, True, good[1].image is not None]
    assert batch["image_mask"][3].all() and batch["image_mask"][0].tolist() == [True, False]
    assert batch["enc_ids"].shape[1] <= spec.max_text_len and batch["dec_ids"].shape[1] <= spec.max_target_len
    assert batch["has_caption"].tolist()[:4] == [False, False, False, False]
    eos = tok.decoder.eos_token_id
    lengths = batch["dec_mask"].sum(dim=1)
    assert lengths[0] == 1 and batch["dec_ids"][0, 0] == eos  # empty target = eos only
    assert all(batch["dec_ids"][i, n - 1] == eos for i, n in enumerate(lengths.tolist()))
    assert (batch["labels"][batch["dec_mask"] == 0] == -100).all()
    torch.manual_seed(0)
    out = build_model(spec, tok)(batch)
    assert math.isfinite(out["loss"].item())
    with pytest.raises(ValueError, match="unknown task"):
        collate([Example("mlm", None, "a", "en", "b")], tok, spec)


def test_the_decoder_computes_gpt2s_gelu_in_one_op_with_the_same_losses(tok):
    """The fused tanh GELU replaces GPT-2's six-op `gelu_new` at build and load; the saved config
    keeps `gelu_new`, and putting the six-op module back gives the same losses."""
    from transformers.activations import NewGELUActivation

    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok).eval()
    acts = [m.act for m in model.decoder.modules() if hasattr(m, "act")]
    assert acts and not any(isinstance(a, NewGELUActivation) for a in acts)
    assert model.config["decoder_config"]["activation_function"] == "gelu_new"
    batch = collate(examples(spec, 8), tok, spec)
    with torch.no_grad():
        fused = model(batch)
        for m in model.decoder.modules():
            if hasattr(m, "act"):
                m.act = NewGELUActivation()
        six_ops = model(batch)
    for key in ("loss_trans", "loss_cap", "loss_qus"):
        assert fused[key] > 0 and torch.allclose(fused[key], six_ops[key], atol=1e-5), key


def test_iglue_image_size_other_than_blip2s_is_refused(tok):
    from PIL import Image

    from mvlp_core.contract import StageError
    from mvlp_core.model.unigen import eval_bindings

    spec = tiny_spec()
    model = build_model(spec, tok)
    photo = Image.new("RGB", (40, 30), (200, 10, 10))
    assert tuple(eval_bindings(model, spec.image_size).transform(photo).shape) == (
        3,
        spec.image_size,
        spec.image_size,
    )
    with pytest.raises(StageError, match="leave iglue.image_size unset"):
        eval_bindings(model, spec.image_size * 2)


def test_iglue_max_text_len_cuts_unigens_encoder_texts(tok):
    """iglue.max_text_len: both the dual encoder's texts and the generative heads' source cut there."""
    from mvlp_core.model.unigen import Example, eval_bindings

    spec = tiny_spec()
    model = build_model(spec, tok)
    long = " ".join(["two dogs run on the beach"] * 20)
    own, cut = eval_bindings(model), eval_bindings(model, max_text_len=5)
    assert own.encode([long])[0].shape[1] == spec.max_text_len > 5
    assert cut.encode([long])[0].shape[1] == 5
    image = torch.zeros(3, spec.image_size, spec.image_size, dtype=torch.uint8)
    ex = Example(task="trans", image=image, source=long, source_lang="en", target="x", caption=long)
    for key in ("enc_ids", "itc_ids"):
        assert cut.collate([ex])[key].shape[1] == 5
        assert own.collate([ex])[key].shape[1] == spec.max_text_len
