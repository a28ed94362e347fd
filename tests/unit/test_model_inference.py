"""Inference methods on a tiny model that really learned something: a few dozen AdamW steps on a
handful of synthetic-world examples make the loss fall by a large factor, the trained targets
outrank the alternatives, and greedy decoding reproduces them."""

from __future__ import annotations

import pytest
import torch
from _model_world import examples, single_thread, tiny_spec, tokenizers  # noqa: F401

from mvlp_core.model.unigen import TASK_IDS, Example, build_model, collate

STEPS = 40


@pytest.fixture(scope="module")
def trained():
    """(model, batch, first loss, last loss) after STEPS steps on 4 examples, one per task."""
    tok = tokenizers()
    spec = tiny_spec(dims={"hidden_size": 64, "intermediate_size": 128, "embed_dim": 32})
    torch.manual_seed(0)
    model = build_model(spec, tok)
    batch = collate(examples(spec, 4), tok, spec)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(STEPS):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), batch, spec, losses


def test_a_few_dozen_steps_overfit_a_handful_of_examples(trained):
    _, _, _, losses = trained
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def test_score_targets_ranks_the_trained_target_first(trained):
    model, batch, spec, _ = trained
    tok = model.tokenizers
    trans = int((batch["task"] == TASK_IDS["trans"]).nonzero()[0])
    source = tok.encoder.decode(batch["enc_ids"][trans], skip_special_tokens=True)
    right = tok.decoder.decode(
        batch["dec_ids"][trans][batch["dec_mask"][trans] == 1], skip_special_tokens=True
    )
    wrong = ["a red circle", "two green stars", "a big yellow triangle"]
    candidates = collate([Example("trans", None, source, "de", t) for t in [right, *wrong]], tok, spec)
    scores = model.score_targets(candidates)
    assert scores.shape == (4,) and int(scores.argmax()) == 0, scores


def test_generate_reproduces_a_trained_caption(trained):
    model, batch, _, _ = trained
    cap = int((batch["task"] == TASK_IDS["cap"]).nonzero()[0])
    row = {k: v[cap : cap + 1] for k, v in batch.items()}
    expected = model.tokenizers.decoder.decode(
        batch["dec_ids"][cap][batch["dec_mask"][cap] == 1], skip_special_tokens=True
    ).strip()
    assert model.generate(row, max_new_tokens=24) == [expected]


def test_match_score_and_features(trained):
    model, batch, spec, _ = trained
    has = batch["has_image"] & batch["has_caption"]
    pixels, ids, mask = batch["pixel_values"][has], batch["itc_ids"][has], batch["itc_mask"][has]
    scores = model.match_score(pixels, ids, mask)
    # = log p("yes") - log p("no") of the [match] prompt, by score_targets
    rows = {
        "task": torch.full((len(ids),), TASK_IDS["match"]),
        "pixel_values": pixels,
        "has_image": torch.ones(len(ids), dtype=torch.bool),
        "enc_ids": ids,
        "enc_mask": mask,
    }
    eos = model.tokenizers.decoder.eos_token_id
    logp = []
    for answer in ("yes", "no"):
        target = torch.tensor(model.tokenizers.decoder(answer)["input_ids"] + [eos]).expand(len(ids), -1)
        logp.append(model.score_targets({**rows, "dec_ids": target, "dec_mask": torch.ones_like(target)}))
    assert scores.shape == (len(ids),) and torch.allclose(scores, logp[0] - logp[1], atol=1e-5)
    states, image_cls = model.image_features(pixels)
    text_cls = model.text_features(ids, mask)
    assert states.shape == (len(pixels), spec.num_query_tokens, model.image_encoder.hidden_size)
    assert torch.allclose(image_cls.norm(dim=-1), torch.ones(len(pixels)), atol=1e-5)
    assert torch.allclose(text_cls.norm(dim=-1), torch.ones(len(pixels)), atol=1e-5)
    # the [CLS] pair is what the contrastive loss scored
    loss = model(batch)["loss_itc"]
    logits = image_cls @ text_cls.t() / model.temperature.clamp(*spec.temperature_range)
    target = torch.arange(len(pixels))
    by_hand = (
        torch.nn.functional.cross_entropy(logits, target)
        + torch.nn.functional.cross_entropy(logits.t(), target)
    ) / 2
    assert torch.allclose(loss, by_hand, atol=1e-5)
    # two images per example (MaRVL-style): K*Q query states, one [CLS]
    pair = torch.stack([pixels, pixels.flip(0)], dim=1)
    states2, cls2 = model.image_features(pair)
    assert states2.shape[1] == 2 * spec.num_query_tokens and cls2.shape == image_cls.shape
    assert model.match_score(pair, ids, mask).shape == scores.shape
