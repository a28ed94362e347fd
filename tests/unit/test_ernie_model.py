"""ERNIE-UniX² (mvlp_core/model/ernie) against its paper (§3, §4.3): the spec's defaults, the task
schedule (uniform, one task a micro-step, the same on every rank), the prefix-LM split, decoder
causality, mMMT's masked source with MLM on it, CMCL/CLCL against a hand computation, ITM as a
sigmoid classifier over B positives and 2B in-batch negatives, base built from XLM-R and ViT
checkpoints, and a tiny model that learns every task on the synthetic world of coloured squares."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mvlp_core.model.ernie import Collate, ErnieModel, build, schedule
from mvlp_core.model.ernie.batch import IMAGE_TASKS, prefix_lengths
from mvlp_core.model.ernie.build import _config, _configs
from mvlp_core.model.losses import mine_hard_negatives
from mvlp_core.model.parts.masking import IGNORE
from mvlp_core.spec.model_ernie import TASKS, ErnieModelSpec
from mvlp_core.train.plan import plan_for
from tests.unit.test_wsmvlp_model import COLOURS, LANGS, MONO, caption, render, tokenizer, translations

TASK_ROWS = ("cmcl", "clcl", "itm", "mlm_image", "mlm_text", "plm", "vplm", "mt", "mmmt")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One torch thread: on 2 shared cores two threads per process oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def micro(**kw) -> ErnieModel:
    """A fresh micro model (or another size: `size=`), seeded, on the shared trained tokenizer."""
    torch.manual_seed(kw.pop("seed", 0))
    spec = ErnieModelSpec(**{"size": "micro", **kw})
    vision, text = _configs(spec, tokenizer())
    return ErnieModel(_config(spec, vision, text, spec.dims.text_layers, [0.5] * 3, [0.5] * 3), tokenizer())


def record(colour: str) -> dict:
    return {"captions": {"en": caption(colour), **{lang: caption(colour, lang) for lang in LANGS}}}


def items(model: ErnieModel, task: str, rng: random.Random, n: int = 8) -> list:
    """A task's raw rows: distinct colours, distinct pairs, distinct sentences."""
    if task in IMAGE_TASKS:
        transform = model.image_transform()
        return [(transform(render(c, rng)), record(c)) for c in rng.sample(list(COLOURS), n)]
    if task in ("clcl", "mt"):
        pairs = []
        for en, other in rng.sample(translations(), n):
            lang = rng.choice(LANGS)
            pairs.append((en, "en", other[lang], lang))
        return pairs
    return rng.sample(MONO, n)


def sub_batch(model: ErnieModel, task: str, seed: int = 0, n: int = 8) -> dict:
    g = torch.Generator().manual_seed(seed)
    return Collate(model.tokenizer, model.spec)({task: items(model, task, random.Random(seed), n)}, g)


# ---------------------------------------------------------------- spec and schedule
def test_spec_defaults_follow_the_paper() -> None:
    base = ErnieModelSpec()
    assert base.family == "ernie" and base.size == "base" and tuple(base.tasks) == TASKS
    assert (base.prefix_ratio, base.prefix_zero_prob) == (0.2, 0.5)  # §3.2.3
    assert base.batch == 4096 and base.temperature == 0.07  # Table 5; a learnable τ
    assert (base.dims.text_layers, base.dims.fusion_layers, base.dims.hidden_size) == (6, 6, 768)  # Table 3 †
    assert base.checkpoints() == ("google/vit-base-patch16-224-in21k", "xlm-roberta-base")
    # what pretrain.epochs counts: image-text samples a step, 4.5 of the 8 tasks' draws
    assert base.images_per_step() == 4096 * 4.5 / 8
    assert ErnieModelSpec(tasks=["cmcl", "clcl"], batch=10).images_per_step() == 5
    # as the loader reads it: 100 over 32 x 8 micro-batches is 1 a micro-batch, 256 a step
    assert ErnieModelSpec(tasks=["cmcl"], batch=100).images_per_step(256) == 256
    with pytest.raises(ValueError, match="twice"):
        ErnieModelSpec(tasks=["cmcl", "cmcl"])


def test_the_pretrain_stage_counts_its_image_samples_and_plans_it() -> None:
    """`pretrain.epochs` counts image samples: an ERNIE step reads 4.5 of 8 tasks' draws of them."""
    from mvlp_core.spec import load_spec
    from mvlp_core.stages.pretrain import needs, with_steps_from_epochs

    spec = load_spec(
        "demo", ["models=null", "model={family: ernie, size: micro, batch: 16}", "pretrain.epochs=3"]
    )
    assert with_steps_from_epochs(spec, 2000).pretrain.max_steps == math.ceil(3 * 2000 / 9)
    assert "9 image samples a step" in needs(spec).resources


def test_one_task_a_micro_step_drawn_uniformly_the_same_on_every_rank() -> None:
    """§3.2: "in each iteration, a specified task is selected ... with equal probabilities"; MLM,
    one task, reads image-text pairs and monolingual text half each (Table 6). The plan is a
    function of (seed, step): every rank trains the same task at the same step."""
    plan = schedule(list(TASKS), 16)
    steps = 8000
    counts: Counter = Counter()
    for step in range(steps):
        tasks = plan_for(plan, 7, step)
        assert len(tasks) == 1 and set(tasks.values()) == {16}
        counts[next(iter(tasks))] += 1
    counts["mlm"] = counts.pop("mlm_image") + counts.pop("mlm_text")
    expected = steps / len(TASKS)
    chi2 = sum((counts[t] - expected) ** 2 / expected for t in TASKS)
    assert chi2 < 24.3, counts  # χ² with 7 degrees of freedom, p = 0.001
    mlm = Counter(next(iter(plan_for(plan, 7, s))) for s in range(steps))
    assert abs(mlm["mlm_image"] - mlm["mlm_text"]) < 4 * math.sqrt(expected / 2)
    # consecutive micro-steps draw independently (accum 1): gradients of several tasks merge
    assert len({next(iter(plan_for(plan, 7, s))) for s in range(8)}) > 1
    only = schedule(["cmcl", "mt"], 4)
    assert {next(iter(plan_for(only, 0, s))) for s in range(200)} == {"cmcl", "mt"}


# ---------------------------------------------------------------- generation tasks
def test_prefix_lm_splits_at_zero_or_a_fifth_with_equal_odds() -> None:
    """§3.2.3: T_p is 0 or ⌊20% of T⌋, each with probability ½; the encoder reads exactly the
    prefix (nothing at all when T_p = 0: vPLM is then captioning), the decoder predicts exactly
    the suffix and </s>."""
    spec = ErnieModelSpec(size="micro")
    cuts = prefix_lengths([17] * 4000, spec, torch.Generator().manual_seed(0))
    zeros = cuts.count(0)
    assert set(cuts) == {0, 3} and abs(zeros - 2000) < 4 * math.sqrt(1000)  # 4σ of Binomial(4000, ½)

    model = micro()
    tok = model.tokenizer
    rows = items(model, "vplm", random.Random(1), n=8)
    for task, raw in (("plm", [(f"{t} {t}", lang) for t, lang in MONO[:8]]), ("vplm", rows)):
        g = torch.Generator().manual_seed(3)
        b = Collate(tok, model.spec)({task: raw}, g)[task]
        texts = [t for t, _ in raw] if task == "plm" else None
        seen_zero = seen_cut = False
        for i in range(len(raw)):
            if texts is None:  # the caption drawn for the image: what the decoder and encoder hold together
                enc = [int(x) for x, m in zip(b["enc_ids"][i], b["enc_mask"][i]) if m]
                dec = [int(x) for x in b["dec_labels"][i] if x != IGNORE]
                full = enc[1:-1] + dec[:-1]
            else:
                full = tok(texts[i], add_special_tokens=False)["input_ids"][: model.spec.max_len.mono - 2]
                enc = [int(x) for x, m in zip(b["enc_ids"][i], b["enc_mask"][i]) if m]
                dec = [int(x) for x in b["dec_labels"][i] if x != IGNORE]
            cut = math.floor(0.2 * len(full))
            if enc:
                seen_cut = True
                assert enc == [tok.bos_token_id, *full[:cut], tok.eos_token_id]
                assert dec == [*full[cut:], tok.eos_token_id]
            else:
                seen_zero = True
                assert dec == [*full, tok.eos_token_id] and not b["enc_mask"][i].any()
            dec_in = [int(x) for x, m in zip(b["dec_ids"][i], b["dec_mask"][i]) if m]
            assert dec_in == [tok.bos_token_id, *dec[:-1]], "teacher forcing: labels shifted by one"
        assert seen_zero and seen_cut, task
    assert "pixel_values" in b and b["lang"].min() > 0


def test_an_empty_prefix_gives_the_encoder_no_text() -> None:
    """A row with T_p = 0 is generated from the image alone: whatever token ids its padded prefix
    holds, the decoder's logits do not change."""
    model = micro().eval()
    b = sub_batch(model, "vplm", seed=5)["vplm"]
    empty = ~b["enc_mask"].bool().any(dim=1)
    assert empty.any() and (~empty).any()
    with torch.no_grad():
        before, _, _ = model._seq2seq(b, with_image=True)
        noisy = dict(
            b, enc_ids=torch.where(empty[:, None], torch.randint(5, 50, b["enc_ids"].shape), b["enc_ids"])
        )
        after, _, _ = model._seq2seq(noisy, with_image=True)
    assert torch.allclose(before[empty], after[empty], atol=1e-6)


def test_decoder_position_t_never_reads_later_targets() -> None:
    """Changing target token t+1 leaves the decoder's logits at positions ≤ t unchanged (and
    changes those after it)."""
    model = micro().eval()
    b = sub_batch(model, "mt", seed=2)["mt"]
    t = 2
    with torch.no_grad():
        before, _, _ = model._seq2seq(b, with_image=False)
        ids = b["dec_ids"].clone()
        ids[:, t + 1] = (ids[:, t + 1] + 7) % len(model.tokenizer)
        after, _, _ = model._seq2seq(dict(b, dec_ids=ids), with_image=False)
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 1], after[:, t + 1], atol=1e-4)
    # the language to write is read from the first position on
    with torch.no_grad():
        other, _, _ = model._seq2seq(
            dict(b, lang=(b["lang"] % len(model.spec.languages)) + 1), with_image=False
        )
    assert not torch.allclose(before[:, 0], other[:, 0], atol=1e-4)


def test_mmmt_masks_the_source_predicts_it_and_translates_in_full() -> None:
    """Eq. 7: the source caption with tokens replaced by [MASK] (and MLM on exactly those), the
    image, and the target the whole translation, in a language the decoder is told."""
    model = micro(mmmt_mask_prob=0.3)
    tok = model.tokenizer
    raw = items(model, "mmmt", random.Random(4), n=8)
    b = Collate(tok, model.spec)({"mmmt": raw}, torch.Generator().manual_seed(4))["mmmt"]
    chosen = b["enc_labels"] != IGNORE
    assert chosen.any() and (b["enc_ids"][chosen] == tok.mask_token_id).all()
    assert not (b["enc_ids"][~chosen] == tok.mask_token_id).any()
    assert not chosen[:, 0].any() and not chosen[b["enc_mask"] == 0].any(), "<s> and padding never masked"
    langs = ["en", *sorted(LANGS)]
    for i, (_, rec) in enumerate(raw):
        dec = [int(x) for x in b["dec_labels"][i] if x != IGNORE]
        target = [
            c
            for c in rec["captions"].values()
            if tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] == dec
        ]
        assert target, "the decoder's target is one of the record's captions, whole"
        source = [
            int(x)
            for x in torch.where(chosen[i], b["enc_labels"][i], b["enc_ids"][i])[b["enc_mask"][i].bool()]
        ]
        src_caps = [
            c
            for c in rec["captions"].values()
            if [tok.bos_token_id, *tok(c, add_special_tokens=False)["input_ids"], tok.eos_token_id] == source
        ]
        assert src_caps and src_caps[0] != target[0], "source and target are two languages of the record"
        lang = next(lang for lang, c in rec["captions"].items() if c == target[0])
        assert int(b["lang"][i]) == model.spec.languages.index(lang) + 1 and lang in langs
    out = model({"mmmt": b})
    assert (
        set(out) >= {"loss_mmmt", "loss_mmmt_mlm"} and out["loss"] == out["loss_mmmt"] + out["loss_mmmt_mlm"]
    )
    # a record with one language cannot be translated: left out, and a batch of only such is a zero step
    lone = [(raw[0][0], {"captions": {"en": "a red square"}})]
    empty = Collate(tok, model.spec)({"mmmt": lone}, torch.Generator().manual_seed(0))
    assert set(empty) == {"n_samples"} and int(empty["n_samples"]) == 0
    zero = model(empty)
    assert float(zero["loss"].detach()) == 0.0 and zero["loss"].requires_grad


# ---------------------------------------------------------------- understanding tasks
def test_a_rank_without_a_usable_cmcl_record_still_joins_the_gathers(monkeypatch) -> None:
    """CMCL all-gathers every rank's features (and all-reduces in its backward): a rank whose
    records all lack a caption runs the loss on no rows, with a gradient path, or the others hang."""
    from mvlp_core.model.ernie import model as ernie_model

    calls = []

    def recorded(image, text, temperature):
        calls.append((tuple(image.shape), image.requires_grad, text.requires_grad))
        return ernie_model.contrastive_loss.__wrapped__(image, text, temperature)

    recorded.__wrapped__ = ernie_model.contrastive_loss
    monkeypatch.setattr(ernie_model, "contrastive_loss", recorded)
    model = micro()
    rows = [(img, {"captions": {"en": " "}}) for img, _ in items(model, "cmcl", random.Random(0), n=3)]
    b = Collate(model.tokenizer, model.spec)({"cmcl": rows}, torch.Generator().manual_seed(0))
    assert int(b["n_samples"]) == 0 and b["cmcl"]["ids"].shape[0] == 0
    out = model(b)
    out["loss"].backward()
    assert calls == [((0, model.spec.embed_dim), True, True)] and float(out["loss_cmcl"].detach()) == 0.0


def test_cmcl_and_clcl_equal_the_hand_computation() -> None:
    """Eq. 1-2: −1/N (Σ log softmax(S/τ) over texts + Σ over images), S the cosine of the projected
    [CLS] states of the two towers; one τ, which both losses train."""
    model = micro()
    with torch.no_grad():
        model.temp.fill_(0.2)
    cm = sub_batch(model, "cmcl")["cmcl"]
    cl = sub_batch(model, "clcl")["clcl"]
    image = F.normalize(model.vision_proj(model.encode_image(cm["pixel_values"])[:, 0]), dim=-1)
    text = F.normalize(model.text_proj(model.encode_text(cm["ids"], cm["mask"])[:, 0]), dim=-1)
    a = F.normalize(model.text_proj(model.encode_text(cl["ids_a"], cl["mask_a"])[:, 0]), dim=-1)
    c = F.normalize(model.text_proj(model.encode_text(cl["ids_b"], cl["mask_b"])[:, 0]), dim=-1)

    def hand(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = x @ y.t() / 0.2
        n = len(s)
        return -(torch.log_softmax(s, 1).diagonal().sum() + torch.log_softmax(s.t(), 1).diagonal().sum()) / n

    got_cm, got_cl = model({"cmcl": cm})["loss_cmcl"], model({"clcl": cl})["loss_clcl"]
    assert torch.allclose(got_cm, hand(text, image), atol=1e-5)
    assert torch.allclose(got_cl, hand(a, c), atol=1e-5)
    for loss in (got_cm, got_cl):
        model.zero_grad()
        loss.backward()
        assert model.temp.grad is not None and float(model.temp.grad) != 0.0


@pytest.mark.parametrize("negatives", ["random", "hard"])
def test_itm_is_a_sigmoid_over_positives_and_in_batch_negatives(negatives: str) -> None:
    """Eq. 3: BCE of one sigmoid logit on [MM_CLS], over the B pairs (label 1) and, as negatives,
    per image a text and per text an image of the batch, never a positive: uniformly by default
    (the paper names no mining), ∝ softmax of the similarities with `itm_negatives: hard`."""
    model = micro(itm_negatives=negatives).eval()
    b = sub_batch(model, "itm", seed=6)["itm"]
    model.generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        got = model({"itm": b})["loss_itm"]
        n = len(b["ids"])
        image, text = model.encode_image(b["pixel_values"]), model.encode_text(b["ids"], b["mask"])
        sims = (
            model._image_feature(image) @ model._text_feature(text).t() / model._temperature()
            if negatives == "hard"
            else torch.zeros(n, n)
        )
        img_a, txt_a, img_b, txt_b = mine_hard_negatives(
            sims, torch.eye(n, dtype=torch.bool), torch.Generator().manual_seed(11)
        )
        assert len(img_a) == len(img_b) == n and not (img_a == txt_a).any() and not (img_b == txt_b).any()
        img = torch.cat([torch.arange(n), img_a, img_b])
        txt = torch.cat([torch.arange(n), txt_a, txt_b])
        logits = model.match_logit(b["pixel_values"][img], b["ids"][txt], b["mask"][txt])
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)])
    assert torch.allclose(got, F.binary_cross_entropy_with_logits(logits, labels), atol=1e-5)


def test_mlm_predicts_masked_caption_tokens_from_the_image_and_text_alone() -> None:
    """Eq. 4 on image-text (the image in the cross-modal encoder: its logits depend on the pixels)
    and MLM on monolingual text (no image)."""
    model = micro().eval()
    b = sub_batch(model, "mlm_image", seed=8)["mlm_image"]
    assert (b["labels"] != IGNORE).any(dim=1).all()
    with torch.no_grad():
        one = model({"mlm_image": b})["loss_mlm_image"]
        other = model({"mlm_image": dict(b, pixel_values=b["pixel_values"].flip(0))})["loss_mlm_image"]
        text = model({"mlm_text": sub_batch(model, "mlm_text", seed=8)["mlm_text"]})
    assert not torch.allclose(one, other) and set(text) == {"loss", "loss_mlm_text", "tokens"}
    # read at the text's own positions of the cross-modal encoder's output, after [MM_CLS]
    with torch.no_grad():
        image = model.encode_image(b["pixel_values"])
        states, _ = model.fuse(model.encode_text(b["masked_ids"], b["mask"]), b["mask"], image)
        rows, cols = (b["labels"] != IGNORE).nonzero(as_tuple=True)
        hand = F.cross_entropy(model.mlm_head(states[rows, 1 + cols]), b["labels"][rows, cols])
    assert torch.allclose(one, hand, atol=1e-5)


# ---------------------------------------------------------------- FLOPs
def _torch_flops(model: ErnieModel, b: dict) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(b)["loss"].backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("task", TASK_ROWS)
def test_counted_training_flops_match_torchs_count(task: str) -> None:
    """The MFU numerator (mvlp_core/model/ernie/flops.py), counted on the host from the batch,
    against torch's FLOP counter of the step (masks full: torch counts padded shapes, the count
    only real tokens; attention on the math kernel, whose matmuls torch counts): exact but for the
    contrastive losses' similarity matrices, which it leaves out (under 0.1%)."""
    model = micro()
    model.vision.set_attn_implementation("eager")
    b = sub_batch(model, task, seed=3)
    for key in [k for k in b[task] if k.endswith("mask") or k.startswith("mask_")]:
        b[task][key] = torch.ones_like(b[task][key])
    tolerance = 2e-3 if task in ("cmcl", "clcl") else 1e-6
    assert model.train_flops(b) == pytest.approx(_torch_flops(model, b), rel=tolerance)


def test_counted_flops_count_real_tokens_only() -> None:
    """Padding is not work: extra padded columns (here on rows whose prefix is empty) leave the
    count as it was."""
    model = micro(prefix_zero_prob=1.0)
    b = sub_batch(model, "plm", seed=4)
    sub = b["plm"]
    assert not sub["enc_mask"].any()
    counted = model.train_flops(b)
    padded = {
        k: torch.cat([v, torch.zeros(v.shape[0], 3, dtype=v.dtype)], 1)
        if v.dim() == 2 and k != "dec_labels"
        else v
        for k, v in sub.items()
    }
    padded["dec_labels"] = torch.cat([sub["dec_labels"], torch.full((len(sub["lang"]), 3), IGNORE)], 1)
    assert model.train_flops({"plm": padded}) == counted


# ---------------------------------------------------------------- learning
def train(model: ErnieModel, tasks: tuple[str, ...], steps: int, lr: float = 1e-3) -> dict[str, list[float]]:
    """`steps` AdamW steps on fresh samples of the world, task by task in turn; each loss per step."""
    model.generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    collate = Collate(model.tokenizer, model.spec)
    history: dict[str, list[float]] = {}
    for step in range(steps):
        task = tasks[step % len(tasks)]
        out = model(collate({task: items(model, task, rng)}, gen))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        for k, v in out.items():
            if k.startswith("loss_"):
                history.setdefault(k, []).append(float(v.detach()))
    return history


@pytest.mark.slow
def test_tiny_model_learns_every_task() -> None:
    """140 steps of each task in turn (about 20 s): every loss's mean over its last 10 steps is
    under 60% of its first 10 (monolingual MLM, on sentences the world draws at random, under
    90%; ITM, slowest to leave its label prior, below it: the next test)."""
    history = train(micro(seed=1, size="tiny"), TASK_ROWS, steps=140 * len(TASK_ROWS))
    assert set(history) == {f"loss_{t}" for t in TASK_ROWS} | {"loss_mmmt_mlm"}
    for k, values in history.items():
        first, last = sum(values[:10]) / 10, sum(values[-10:]) / 10
        bound = {"loss_itm": 1.0, "loss_mlm_text": 0.9}.get(k, 0.6)
        assert last < bound * first, f"{k}: first 10 steps {first:.3f}, last 10 {last:.3f}"


def test_itm_leaves_its_label_prior() -> None:
    """ITM alone, 250 steps: the loss falls well below the BCE of predicting the prior (1 positive :
    2 negatives, 0.64), which a classifier that ignores the image or the text cannot."""
    itm = train(micro(seed=1, size="tiny"), ("itm",), steps=250)["loss_itm"]
    prior = -(math.log(1 / 3) / 3 + 2 * math.log(2 / 3) / 3)
    assert sum(itm[-20:]) / 20 < 0.85 * prior, itm[-20:]


# ---------------------------------------------------------------- base
def test_base_builds_from_xlmr_and_vit(tmp_path: Path) -> None:
    """The † variant: XLM-R's first layers are the text encoder (its [CLS] states reproduced), the
    rest the cross-modal encoder; the decoder's layers are XLM-R's last ones with their
    cross-attention copied from the self-attention; both LM heads are XLM-R's."""
    from transformers import ViTConfig, ViTModel, XLMRobertaConfig, XLMRobertaForMaskedLM

    tok = tokenizer()
    torch.manual_seed(0)
    xlmr = XLMRobertaForMaskedLM(
        XLMRobertaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=66,
            type_vocab_size=1,
            pad_token_id=tok.pad_token_id,
        )
    ).eval()
    xlmr.save_pretrained(tmp_path / "xlmr")
    tok.save_pretrained(str(tmp_path / "xlmr"))
    vit_config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    vit = ViTModel(vit_config, add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    spec = ErnieModelSpec(
        size="base",
        vision=str(tmp_path / "vit"),
        text_encoder=str(tmp_path / "xlmr"),
        image_size=32,
        embed_dim=16,
        dims={"decoder_layers": 2},
    )
    model = build(spec).eval()
    assert (len(model.text_layers), len(model.fusion_layers), len(model.decoder_layers)) == (2, 2, 2)
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in model.vision.state_dict().items())
    hf = xlmr.roberta.encoder.layer
    for j, layer in enumerate(model.decoder_layers):
        own = hf[2 + j].attention.state_dict()
        assert all(torch.equal(v, own[k]) for k, v in layer.crossattention.state_dict().items())
        assert all(torch.equal(v, own[k]) for k, v in layer.attention.state_dict().items())
    assert torch.equal(model.lm_head.decoder.bias, xlmr.lm_head.bias)
    assert torch.equal(model.mlm_head.dense.weight, xlmr.lm_head.dense.weight)
    ids = tok(["ein rotes Quadrat links", "le chat dort"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.encode_text(ids["input_ids"], ids["attention_mask"])
        theirs = xlmr.roberta(**ids, output_hidden_states=True).hidden_states[2]
    keep = ids["attention_mask"].bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-5)
    with pytest.raises(Exception, match="decoder_layers"):
        build(spec.model_copy(update={"dims": spec.dims.model_copy(update={"decoder_layers": 9})}))
