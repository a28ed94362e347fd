"""save_pretrained/from_pretrained round trip, and the `base` path: BLIP-2, XLM-R and GPT-2
checkpoints of the real classes, saved tiny into tmp dirs and loaded by path."""

from __future__ import annotations

import json

import pytest
import torch
from _model_world import examples, single_thread, tiny_blip2, tiny_spec, tokenizers  # noqa: F401

from mvlp_core.contract import StageError
from mvlp_core.model import load_model
from mvlp_core.model.unigen import build_model, build_tokenizers, collate
from mvlp_core.spec import ModelSpec


def test_save_and_reload_give_the_same_outputs(tmp_path):
    tok = tokenizers()
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec, tok).eval()
    with torch.no_grad():
        model.temperature.fill_(0.05)
    batch = collate(examples(spec, 6), tok, spec)
    model.save_pretrained(tmp_path / "ckpt")
    again = load_model(tmp_path / "ckpt").eval()
    assert (
        again.tokenizers.encoder("ein roter Kreis")["input_ids"]
        == tok.encoder("ein roter Kreis")["input_ids"]
    )
    assert again.tokenizers.task_token_ids() == tok.task_token_ids()
    assert again.temperature.item() == pytest.approx(0.05)
    torch.manual_seed(1)
    first = model(batch)
    torch.manual_seed(1)  # same hard negatives
    second = again(batch)
    for name in ("loss", "loss_trans", "loss_cap", "loss_qus", "loss_match", "loss_itc"):
        assert torch.allclose(first[name], second[name], atol=1e-6), name
    assert torch.allclose(model.score_targets(batch), again.score_targets(batch), atol=1e-5)
    assert json.loads((tmp_path / "ckpt" / "unigen.json").read_text())["spec"]["size"] == "small"
    # a checkpoint named in the spec is what build_model starts from
    resumed = build_model(tiny_spec(checkpoint=str(tmp_path / "ckpt")), tok).eval()
    assert torch.allclose(resumed.score_targets(batch), model.score_targets(batch), atol=1e-5)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="holds no saved model.*save_pretrained"):
        load_model(tmp_path)


@pytest.fixture(scope="module")
def base_checkpoints(tmp_path_factory):
    """Tiny instances of the exact classes the base model loads, saved with save_pretrained."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        XLMRobertaConfig,
        XLMRobertaModel,
    )

    root = tmp_path_factory.mktemp("hub")
    tok = tokenizers()
    blip2 = tiny_blip2()
    blip2.save_pretrained(root / "blip2")
    xlmr = XLMRobertaModel(
        XLMRobertaConfig(
            vocab_size=len(tok.encoder),
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=80,
        )
    )
    xlmr.save_pretrained(root / "xlmr")
    tok.encoder.save_pretrained(root / "xlmr")
    from transformers import AutoTokenizer

    gpt2_tok = AutoTokenizer.from_pretrained(str(_plain_gpt2_tokenizer(root)))
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(gpt2_tok), n_embd=16, n_layer=4, n_head=2, n_positions=128)
    )
    gpt2.save_pretrained(root / "gpt2")
    gpt2_tok.save_pretrained(root / "gpt2")
    return root, blip2, xlmr, gpt2, len(gpt2_tok)


def _plain_gpt2_tokenizer(root):
    """A GPT-2 tokenizer folder as the hub has it: no task tokens, no pad."""
    from _model_world import world_texts
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        world_texts() + ["yes no"], vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False
    )
    folder = root / "gpt2-tok"
    GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    ).save_pretrained(folder)
    return folder


def test_base_loads_every_part_by_path(tmp_path, base_checkpoints):
    root, blip2, xlmr, gpt2, plain_vocab = base_checkpoints
    spec = ModelSpec(
        size="base",
        vision=str(root / "blip2"),
        text_encoder=str(root / "xlmr"),
        decoder=str(root / "gpt2"),
        num_query_tokens=4,
        image_size=32,
        embed_dim=8,
    )
    tok = build_tokenizers(spec, None, tmp_path / "tok")
    assert len(tok.decoder) == plain_vocab + 4 and tok.decoder.pad_token is not None
    model = build_model(spec, tok)
    enc = model.image_encoder
    assert torch.equal(enc.query_tokens, blip2.query_tokens)
    assert torch.equal(
        enc.vision_model.embeddings.patch_embedding.weight,
        blip2.vision_model.embeddings.patch_embedding.weight,
    )
    assert torch.equal(
        enc.qformer.encoder.layer[0].crossattention.attention.key.weight,
        blip2.qformer.encoder.layer[0].crossattention.attention.key.weight,
    )
    assert torch.equal(
        model.text_encoder.encoder.layer[0].attention.self.query.weight,
        xlmr.encoder.layer[0].attention.self.query.weight,
    )
    assert torch.equal(model.decoder.transformer.h[0].mlp.c_fc.weight, gpt2.transformer.h[0].mlp.c_fc.weight)
    assert model.decoder.transformer.wte.weight.shape[0] == len(tok.decoder)
    # the paper's freezing: the ViT and the middle half of the decoder (layers 1, 2 of 4)
    frozen = {n.split(".weight")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("image_encoder.vision_model.") for n in frozen)
    assert {int(n.split(".")[3]) for n in frozen if n.startswith("decoder.transformer.h.")} == {1, 2}

    batch = collate(examples(spec, 8), tok, spec)
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss_itc"] > 0 and out["loss_match"] > 0
    model.save_pretrained(tmp_path / "unigen")
    again = load_model(tmp_path / "unigen").eval()
    model.eval()
    assert torch.allclose(again.score_targets(batch), model.score_targets(batch), atol=1e-5)


def _base_spec(root, **change) -> ModelSpec:
    fields = {
        "vision": str(root / "blip2"),
        "text_encoder": str(root / "xlmr"),
        "decoder": str(root / "gpt2"),
        "num_query_tokens": 4,
        "image_size": 32,
    }
    return ModelSpec(size="base", **{**fields, **change})


@pytest.mark.parametrize("field", ["vision", "text_encoder", "decoder"])
def test_a_checkpoint_that_cannot_be_loaded_names_itself_and_the_fix(
    tmp_path, base_checkpoints, field, monkeypatch
):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no hub here: fail fast
    root = base_checkpoints[0]
    tok = build_tokenizers(_base_spec(root), None, tmp_path / "tok")
    bad = _base_spec(root, **{field: "no-such-org/no-such-model"})
    failures = [lambda: build_model(bad, tok)]
    if field != "vision":
        failures.append(lambda: build_tokenizers(bad, None, tmp_path / "bad"))
    for failure in failures:
        with pytest.raises(StageError) as err:
            failure()
        message = str(err.value)
        assert "no-such-org/no-such-model" in message and f"model.{field}" in message
        assert "local" in message and "checkpoint folder" in message


def test_a_wrong_kind_of_vision_checkpoint_is_named(tmp_path, base_checkpoints):
    root = base_checkpoints[0]
    tok = build_tokenizers(_base_spec(root), None, tmp_path / "tok")
    with pytest.raises(StageError, match="'gpt2' checkpoint, not BLIP-2"):
        build_model(_base_spec(root, vision=str(root / "gpt2")), tok)
    with pytest.raises(StageError, match="num_query_tokens=4"):
        build_model(_base_spec(root, num_query_tokens=32), tok)


def test_base_shapes_with_random_weights_and_the_papers_freezing():
    """What a GPU benchmark builds: real sizes, no checkpoint (on the meta device: no memory)."""
    spec = ModelSpec(size="base", weights="random")
    with torch.device("meta"):
        model = build_model(spec, tokenizers())
    vit = model.image_encoder.vision_model
    assert 0.98e9 < sum(p.numel() for p in vit.parameters()) < 1.0e9  # ViT-g
    assert not any(p.requires_grad for p in vit.parameters())
    frozen = {
        int(n.split(".")[3])
        for n, p in model.named_parameters()
        if n.startswith("decoder.transformer.h.") and not p.requires_grad
    }
    assert frozen == set(range(3, 9))  # the middle 6 of 12
    assert 1.4e9 < model.num_params() < 1.6e9 and 0.4e9 < model.num_params(trainable_only=True) < 0.5e9


def test_base_with_random_weights_trains_its_tokenizers_without_the_hub(tmp_path, monkeypatch):
    """`model.weights: random` must never reach for a checkpoint: a GPU throughput run has none."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    spec = ModelSpec(
        size="base", weights="random", text_encoder="no-such-org/xlmr", decoder="no-such-org/gpt2"
    )
    texts = ["a red circle above a blue square", "ein roter Kreis über einem blauen Quadrat"] * 20
    tok = build_tokenizers(spec, texts, tmp_path / "tok")
    assert tok.encoder.tokenize("a red circle") and len(tok.task_token_ids()) == 4
    with pytest.raises(StageError, match="need training texts"):
        build_tokenizers(spec, [], tmp_path / "none")
    with pytest.raises(StageError, match="no-such-org/xlmr"):
        build_tokenizers(ModelSpec(size="base", text_encoder="no-such-org/xlmr"), None, tmp_path / "hub")
