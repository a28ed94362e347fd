"""wsmVLP's contract: the spec's defaults, collate (layout, truncation, masking), every trainable
parameter trained by one step over the three streams, save -> load identity, the scoring methods'
shapes, base from HF checkpoints (weights by name, cross-attention from self-attention), and a
micro model that learns every objective on a synthetic world of coloured squares.

Also the helpers test_wsmvlp_fidelity.py imports: the synthetic world and a micro model."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from mvlp_core.contract import StageError
from mvlp_core.model.parts.masking import IGNORE
from mvlp_core.model.tokenizers import _train_sentencepiece
from mvlp_core.model.wsmvlp import WsmvlpModel, build, collate, load
from mvlp_core.model.wsmvlp.build import _configs
from mvlp_core.spec.model_wsmvlp import WsmvlpModelSpec
from mvlp_core.train import grad_sync

# ---------------------------------------------------------------- the synthetic world
COLOURS = {  # rgb, German, French, Spanish
    "red": ((220, 40, 40), "rotes", "rouge", "rojo"),
    "green": ((40, 200, 40), "grünes", "vert", "verde"),
    "blue": ((40, 60, 220), "blaues", "bleu", "azul"),
    "yellow": ((230, 220, 40), "gelbes", "jaune", "amarillo"),
    "white": ((240, 240, 240), "weißes", "blanc", "blanco"),
    "purple": ((150, 40, 180), "lila", "violet", "morado"),
    "orange": ((240, 140, 20), "oranges", "orange", "naranja"),
    "pink": ((250, 150, 200), "rosa", "rose", "rosado"),
}
LANGS = ("de", "fr", "es")
# parallel: the same six sentences in English, German, French and Spanish; plus a few others
SENTENCES = {
    "en": [
        "the cat sleeps on the warm chair",
        "my brother reads a book every evening",
        "we walk to the market in the morning",
        "the train leaves at seven",
        "she drinks coffee with milk",
        "children play in the garden",
    ],
    "de": [
        "die Katze schläft auf dem warmen Stuhl",
        "mein Bruder liest jeden Abend ein Buch",
        "wir gehen am Morgen zum Markt",
        "der Zug fährt um sieben ab",
        "sie trinkt Kaffee mit Milch",
        "die Kinder spielen im Garten",
    ],
    "fr": [
        "le chat dort sur la chaise chaude",
        "mon frère lit un livre chaque soir",
        "nous allons au marché le matin",
        "le train part à sept heures",
        "elle boit du café au lait",
        "les enfants jouent dans le jardin",
    ],
    "es": [
        "el gato duerme en la silla caliente",
        "mi hermano lee un libro cada noche",
        "vamos al mercado por la mañana",
        "el tren sale a las siete",
        "ella bebe café con leche",
        "los niños juegan en el jardín",
    ],
}
MONO = [(t, lang) for lang, ts in SENTENCES.items() for t in ts] + [
    ("il gatto dorme sulla sedia calda", "it"),
    ("il treno parte alle sette", "it"),
    ("кошка спит на тёплом стуле", "ru"),
    ("поезд уходит в семь часов", "ru"),
]


def caption(colour: str, lang: str = "en") -> str:
    _, de, fr, es = COLOURS[colour]
    return {
        "en": f"a {colour} square",
        "de": f"ein {de} Quadrat",
        "fr": f"un carré {fr}",
        "es": f"un cuadrado {es}",
    }[lang]


def translations() -> list[tuple[str, dict[str, str]]]:
    """(English text, {language: its translation}) for every caption and sentence."""
    out = [(caption(c), {lang: caption(c, lang) for lang in LANGS}) for c in COLOURS]
    return out + [(en, {lang: SENTENCES[lang][i] for lang in LANGS}) for i, en in enumerate(SENTENCES["en"])]


def texts() -> list[str]:
    """What the tokenizer is trained on: every caption and sentence in every language."""
    return [t for en, other in translations() for t in (en, *other.values())] + [t for t, _ in MONO]


def render(colour: str, rng: random.Random, size: int = 32) -> Image.Image:
    """A large square of the colour at a random offset on a dark field."""
    image = Image.new("RGB", (size, size), (20, 20, 20))
    side = size - 10
    x, y = rng.randint(0, size - side), rng.randint(0, size - side)
    image.paste(COLOURS[colour][0], (x, y, x + side, y + side))
    return image


@functools.cache
def tokenizer():
    return _train_sentencepiece(texts(), 1000)


def micro(**kw) -> WsmvlpModel:
    """A fresh micro model (or another size: `size=`), seeded, on the shared trained tokenizer."""
    torch.manual_seed(kw.pop("seed", 0))
    spec = WsmvlpModelSpec(**{"size": "micro", **kw})
    vision, text = _configs(spec, tokenizer())
    config = {
        "family": "wsmvlp",
        "spec": spec.model_dump(mode="json"),
        "vision_config": vision,
        "text_config": text,
        "text_layers": spec.dims.text_layers,
        "embed_dim": spec.embed_dim,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    return WsmvlpModel(config, tokenizer())


def items(model: WsmvlpModel, rng: random.Random, n_image=8, n_parallel=12, n_mono=16) -> dict[str, list]:
    """One step's raw samples: distinct colours, distinct English sides, distinct sentences (no
    in-batch duplicate for the contrastive losses to confuse)."""
    transform = model.image_transform()
    pairs = []
    for en, other in rng.sample(translations(), n_parallel):
        lang = rng.choice(LANGS)
        pairs.append((en, "en", other[lang], lang))
    return {
        "image": [(transform(render(c, rng)), caption(c)) for c in rng.sample(list(COLOURS), n_image)],
        "parallel": pairs,
        "mono": rng.sample(MONO, n_mono),
    }


def batch(model: WsmvlpModel, seed: int = 0, **sizes) -> dict:
    rng = random.Random(seed)
    return collate(
        items(model, rng, **sizes), model.tokenizer, model.spec, torch.Generator().manual_seed(seed)
    )


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One torch thread: on 2 shared cores two threads per process oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LOSSES = ("loss_ucl_image", "loss_ucl_text", "loss_vlm", "loss_tlm", "loss_xmlm", "loss_itm")


# ---------------------------------------------------------------- spec
def test_spec_defaults_follow_the_paper() -> None:
    base = WsmvlpModelSpec()
    assert (base.family, base.size, base.weights, base.text_encoder) == (
        "wsmvlp",
        "base",
        "pretrained",
        "xlm-roberta-base",
    )
    assert base.image_size == 256 and base.embed_dim == 256 and base.freeze_vision is True
    assert base.max_len.model_dump() == {"image_text": 35, "parallel": 50, "mono": 64}
    assert base.batch.model_dump() == {"image": 512, "parallel": 2048, "mono": 2048}
    assert (base.temperature, base.temperature_range, base.mask_prob, base.ucl_text) == (
        0.07,
        (0.001, 0.5),
        0.15,
        "masked",
    )
    assert base.text_layers is None, "base: half of the checkpoint's layers, resolved at build"
    assert base.checkpoints() == ("google/vit-base-patch16-224-in21k", "xlm-roberta-base")
    assert WsmvlpModelSpec(size="base", weights="random").checkpoints() == ()
    assert WsmvlpModelSpec(size="micro", checkpoint="/ckpt").checkpoints() == ("/ckpt",)
    tiny = WsmvlpModelSpec(size="tiny")
    assert tiny.freeze_vision is False and tiny.dims.hidden_size == 64 and tiny.dims.intermediate_size == 128
    assert (tiny.dims.num_heads, tiny.dims.vision_layers, tiny.dims.text_layers, tiny.dims.fusion_layers) == (
        2,
        1,
        1,
        1,
    )
    assert tiny.image_size == 32 and tiny.dims.patch_size == 8 and tiny.text_layers == 1
    assert WsmvlpModelSpec(size="micro").dims.hidden_size == 32
    with pytest.raises(ValueError, match="dims.text_layers"):
        WsmvlpModelSpec(size="micro", text_layers=3)
    with pytest.raises(ValueError, match="extra"):
        WsmvlpModelSpec(size="micro", queue_size=65536)


def test_base_random_has_the_published_shapes() -> None:
    spec = WsmvlpModelSpec(size="base", weights="random")
    vision, text = _configs(spec, tokenizer())
    assert (
        vision["hidden_size"],
        vision["num_hidden_layers"],
        vision["patch_size"],
        vision["image_size"],
    ) == (768, 12, 16, 256)
    assert (text["hidden_size"], text["num_attention_heads"], text["intermediate_size"]) == (768, 12, 3072)
    assert text["num_hidden_layers"] == 12 and spec.text_layers == 6 and text["vocab_size"] == 250002
    assert text["hidden_dropout_prob"] == 0.1 and spec.freeze_vision


# ---------------------------------------------------------------- collate
def test_collate_layout_truncation_and_masking() -> None:
    model = micro(max_len={"image_text": 6, "parallel": 7, "mono": 64})
    rng = random.Random(0)
    raw = items(model, rng, n_image=3, n_parallel=4, n_mono=5)
    b = collate(raw, model.tokenizer, model.spec, torch.Generator().manual_seed(0))
    assert int(b["n_samples"]) == 12
    assert b["image"]["pixel_values"].shape == (3, 3, 32, 32)
    full = max(len(model.tokenizer(c)["input_ids"]) for _, c in raw["image"])
    assert full > 6 and b["image"]["ids"].shape == (3, 6), "captions truncated to max_len.image_text"
    assert (b["image"]["ids"][:, -1] == model.tokenizer.eos_token_id).all(), "truncation keeps </s>"
    assert b["parallel"]["ids_a"].shape == b["parallel"]["ids_b"].shape == (4, 7)
    assert b["mono"]["ids"].shape[1] <= 64 and b["mono"]["ids"].shape[0] == 5
    tok = model.tokenizer
    specials = set(tok.all_special_ids)
    groups = [b["image"], b["mono"]] + [
        {k[:-2]: v for k, v in b["parallel"].items() if k.endswith(s)} for s in ("_a", "_b")
    ]
    for g in groups:
        chosen = g["labels"] != IGNORE
        assert chosen.any(dim=1).all(), "every row has a masked token"
        assert torch.equal(g["labels"][chosen], g["ids"][chosen])
        assert not any(int(t) in specials for t in g["ids"][chosen]), "specials and padding never masked"
        assert torch.equal(g["masked_ids"][~chosen], g["ids"][~chosen])
        assert (g["ids"][:, 0] == tok.cls_token_id).all()
    # empty streams are dropped; a stream alone is a batch
    only = collate({"image": [], "mono": raw["mono"]}, tok, model.spec, torch.Generator().manual_seed(0))
    assert set(only) == {"mono", "n_samples"} and int(only["n_samples"]) == 5
    with pytest.raises(ValueError, match="unknown stream"):
        collate({"captions": raw["image"]}, tok, model.spec, None)


# ---------------------------------------------------------------- one training step
def test_one_step_trains_every_trainable_parameter() -> None:
    model = micro()
    out = model(batch(model))
    assert set(LOSSES) <= set(out) and {"loss", "tokens"} <= set(out)
    assert torch.isclose(out["loss"], sum(out[k] for k in LOSSES))
    assert all(torch.isfinite(out[k]) for k in LOSSES)
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_frozen_vision_gets_no_gradient_and_its_random_projection_trains() -> None:
    """A frozen ViT (base's default) holds still; vision_proj, which no checkpoint loads here (the
    ImageNet ViT comes without ALBEF's projection), trains, else the image side of the contrastive
    loss would be a fixed random map."""
    model = micro(freeze_vision=True)
    model(batch(model))["loss"].backward()
    frozen = [n for n, p in model.named_parameters() if n.startswith("vision.")]
    assert frozen
    assert model.vision_proj.weight.requires_grad and model.vision_proj.weight.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        if name in frozen:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("streams", [("image",), ("parallel",), ("mono",), ("parallel", "mono")])
def test_absent_streams_contribute_nothing(streams: tuple[str, ...]) -> None:
    model = micro()
    full = batch(model, n_image=4, n_parallel=4, n_mono=4)
    part = {s: full[s] for s in streams}
    out = model(part)
    expected = {
        "image": {"loss_ucl_image", "loss_vlm", "loss_itm"},
        "parallel": {"loss_ucl_text", "loss_tlm"},
        "mono": {"loss_xmlm"},
    }
    present = {k for k in out if k.startswith("loss_")}
    assert present == set().union(*(expected[s] for s in streams))
    assert torch.isclose(out["loss"], sum(out[k] for k in present))
    masks = [v for s in streams for k, v in part[s].items() if k == "mask" or k.startswith("mask_")]
    assert float(out["tokens"]) == float(sum(m.sum() for m in masks))


@pytest.mark.parametrize("unused", [True, False])
def test_ddp_steps_that_leave_towers_unused(tmp_path: Path, unused: bool) -> None:
    """Under DDP with the GPU path's options, a text-only step (no ViT, cross-attention or ITM head
    used) is followed by a full step; the ViT gets no gradient in the first and one in the second.
    Without `find_unused_parameters` DDP refuses the second step: the option is what makes it work."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = micro()
        full = batch(model, n_mono=4)
        options = {**grad_sync.ddp_options(model), "find_unused_parameters": unused}
        ddp = DistributedDataParallel(model, **options)
        ddp({"mono": full["mono"]})["loss"].backward()
        vit = next(p for n, p in model.named_parameters() if n.startswith("vision") and p.requires_grad)
        assert vit.grad is None
        model.zero_grad(set_to_none=True)
        if not unused:
            with pytest.raises(RuntimeError, match="reduction"):
                ddp(full)["loss"].backward()
            return
        ddp(full)["loss"].backward()
        assert vit.grad is not None and float(vit.grad.abs().sum()) > 0
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- persistence and scoring
def _two(model: WsmvlpModel):
    b = batch(model, n_image=2, n_parallel=2, n_mono=2)
    return b, b["image"]["pixel_values"], b["image"]["ids"], b["image"]["mask"]


def test_save_load_gives_identical_outputs(tmp_path: Path) -> None:
    model = build(WsmvlpModelSpec(size="micro"), texts(), out_dir=tmp_path / "m")
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "tokenizer").is_dir()
    again = load(tmp_path / "m")
    assert again.config == model.config and again.config["family"] == "wsmvlp"
    assert type(WsmvlpModel.from_pretrained(tmp_path / "m")) is WsmvlpModel
    b, pixels, ids, mask = _two(model)
    assert (
        again.tokenizer("ein rotes Quadrat")["input_ids"] == model.tokenizer("ein rotes Quadrat")["input_ids"]
    )
    outs = []
    for m in (model, again):
        m.eval()
        m.generator = torch.Generator().manual_seed(5)
        outs.append(
            {
                **{k: v for k, v in m(b).items() if k.startswith("loss")},
                "image": m.image_features(pixels),
                "text": m.text_features(ids, mask),
                "temp": torch.tensor(m.itc_temperature()),
                "fused": m.fused(pixels, ids, mask),
                "match": m.match_logit(pixels, ids, mask),
            }
        )
    assert outs[0].keys() == outs[1].keys()
    for key in outs[0]:
        assert torch.equal(outs[0][key], outs[1][key]), key


def test_iglue_reads_images_at_its_own_size_with_interpolated_positions(tmp_path: Path) -> None:
    """iglue.image_size: the paper fine-tunes at 384 what it pretrained at 256 (App. B.2.2)."""
    from PIL import Image

    from mvlp_core.eval.model_api import EvalModel

    build(WsmvlpModelSpec(size="micro"), texts(), out_dir=tmp_path / "m")  # 32 px, patch 8
    same, larger = EvalModel.load(tmp_path / "m"), EvalModel.load(tmp_path / "m", image_size=48)
    photo = Image.effect_noise((50, 40), 60).convert("RGB")
    assert tuple(same.transform(photo).shape) == (3, 32, 32)
    pixels = torch.stack([larger.transform(photo)] * 2)
    assert tuple(pixels.shape) == (2, 3, 48, 48)
    larger.model.eval()
    with torch.no_grad():
        assert larger.model.encode_image(pixels).shape[1] == 1 + (48 // 8) ** 2  # 36 patches + [CLS]
        assert larger.model.image_features(pixels).shape == (2, larger.model.spec.embed_dim)
    with pytest.raises(StageError, match="not a multiple of the ViT's patch size 8"):
        EvalModel.load(tmp_path / "m", image_size=44)


def test_iglue_max_text_len_cuts_texts_where_the_task_says(tmp_path: Path) -> None:
    """iglue.max_text_len: the paper fine-tunes at 40 or 50 tokens by task (Tables 7-8); unset, the
    model's pretraining image-text length."""
    from mvlp_core.eval import task_model
    from mvlp_core.eval.model_api import EvalModel

    spec = WsmvlpModelSpec(size="micro")
    build(spec, texts(), out_dir=tmp_path / "m")
    long = " ".join(["a red square next to a blue circle"] * 10)
    own, cut = EvalModel.load(tmp_path / "m"), EvalModel.load(tmp_path / "m", max_text_len=6)
    assert own.encode([long])[0].shape[1] == spec.max_len.image_text
    assert cut.encode([long])[0].shape[1] == 6
    positions = own.model.embeddings.position_embeddings.num_embeddings - 2
    with pytest.raises(StageError, match=f"has {positions} positions"):
        EvalModel.load(tmp_path / "m", max_text_len=positions + 1)
    wrapped = task_model.wrap(cut, "xvnli", ("entailment", "neutral", "contradiction"))
    wrapped.save(tmp_path / "tuned")
    back = EvalModel.load(tmp_path / "tuned", max_text_len=7)  # a saved TaskModel's base too
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    assert back.collate([task_model.Example(image, long, 0)])["ids"].shape[1] == 7


@pytest.mark.parametrize("bf16", [False, True])
def test_iglue_units_run_the_model_under_bf16_autocast_where_the_spec_says(
    tmp_path: Path, bf16: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iglue.bf16: every task's fine-tune forward and its dev and test scoring run the model's
    matrices in bf16 (autocast) while its weights stay fp32; false: fp32 throughout. (The probe
    that reads the fused width when a head is put on runs outside both, and is not counted.)"""
    from _mini_iglue import mini_iglue

    from mvlp_core.eval import task_model
    from mvlp_core.eval.units import FINETUNED, compute_unit
    from mvlp_core.spec import load_spec

    mini_iglue(tmp_path / "iglue")
    build(WsmvlpModelSpec(size="micro"), texts(), out_dir=tmp_path / "m")
    seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}  # training? -> Linear output dtypes

    probing: list[bool] = []
    real_width = task_model.fused_width

    def width(em) -> int:
        probing.append(True)
        try:
            return real_width(em)
        finally:
            probing.pop()

    monkeypatch.setattr(task_model, "fused_width", width)

    def record(module: torch.nn.Module, _inputs, output: torch.Tensor) -> None:
        if not probing:
            seen[module.training].add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: record(m, i, o) if isinstance(m, torch.nn.Linear) else None
    )
    tasks = ["xvnli", "xgqa", "marvl", "xflickrco"]
    spec = load_spec(
        "demo",
        [
            "models=null",
            f"iglue.root={tmp_path / 'iglue'}",
            "iglue.image_roots={}",
            f"iglue.tasks=[{', '.join(tasks)}]",
            "iglue.languages={" + ", ".join(f"{t}: [de]" for t in tasks) + "}",
            "iglue.finetune.epochs=1",
            "iglue.finetune.batch_size=8",
            "iglue.finetune.tasks={}",
            "iglue.rerank_k=3",
            f"iglue.bf16={str(bf16).lower()}",
        ],
        workdir=tmp_path,
    )
    threads = torch.get_num_threads()
    try:
        for task in tasks:
            for unit in (f"{task}.finetune", f"{task}.zero-shot.de"):
                result = compute_unit(spec, str(tmp_path / "m"), str(tmp_path / "out"), unit)
            assert result["samples_out"] == 6 and 0 <= result["score"] <= 100
    finally:
        handle.remove()
        torch.set_num_threads(threads)
    want = {torch.bfloat16} if bf16 else {torch.float32}
    assert seen[True] == want and seen[False] == want
    weights = load(tmp_path / "out" / FINETUNED / "xvnli" / "base").state_dict()
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}


def test_loader_processes_change_nothing_but_where_images_are_decoded(tmp_path: Path) -> None:
    """iglue.loader_workers: two processes decoding and augmenting the fine-tune's images ahead of
    the step train the same weights as the unit's own thread does (every draw keyed by epoch and
    index, dropout's RNG left alone), and an image that does not decode is the same reject."""
    from _mini_iglue import mini_iglue

    from mvlp_core.eval.units import FINETUNED, compute_unit
    from mvlp_core.spec import load_spec

    root = tmp_path / "iglue"
    mini_iglue(root)
    (root / "images/flickr30k/entrain5.jpg").write_bytes(b"not a jpeg")
    build(WsmvlpModelSpec(size="micro"), texts(), out_dir=tmp_path / "m")
    runs = {}
    threads = torch.get_num_threads()
    try:
        for workers in (0, 2):
            spec = load_spec(
                "demo",
                [
                    "models=null",
                    f"iglue.root={root}",
                    "iglue.image_roots={}",
                    "iglue.tasks=[xvnli]",
                    "iglue.finetune.epochs=2",
                    "iglue.finetune.batch_size=8",
                    "iglue.finetune.grad_accum=2",
                    "iglue.finetune.tasks={}",
                    "iglue.finetune.augment={}",
                    f"iglue.loader_workers={workers}",
                ],
                workdir=tmp_path,
            )
            out = tmp_path / f"out{workers}"
            result = compute_unit(spec, str(tmp_path / "m"), str(out), "xvnli.finetune")
            runs[workers] = (result, load(out / FINETUNED / "xvnli" / "base").state_dict())
    finally:
        torch.set_num_threads(threads)
    (plain, plain_weights), (ahead, ahead_weights) = runs[0], runs[2]
    assert (
        plain["rejects"]
        == ahead["rejects"]
        == [{"key": "entrain5", "reason": "bad_image", "detail": str(root / "images/flickr30k/entrain5.jpg")}]
    )
    assert plain["finetune"]["history"] == ahead["finetune"]["history"]
    assert all(torch.equal(plain_weights[k], ahead_weights[k]) for k in plain_weights)
    start = load(tmp_path / "m").state_dict()
    assert any(not torch.equal(plain_weights[k], v) for k, v in start.items())  # it did train


def test_retrieval_fine_tune_runs_each_tower_once_with_albefs_negatives(tmp_path: Path, monkeypatch) -> None:
    """ITC + ITM with in-batch negatives re-paired from one pass of each tower (as ALBEF): the same
    loss as encoding the re-paired images and texts again, in one ViT pass instead of two."""
    from mvlp_core.eval import task_model
    from mvlp_core.eval.model_api import EvalModel

    build(WsmvlpModelSpec(size="micro"), texts(), out_dir=tmp_path / "m")
    em = task_model.wrap(EvalModel.load(tmp_path / "m"), "xflickrco")
    em.model.eval()  # no dropout: both ways see the same states
    examples = [
        task_model.Example(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), caption, group=str(i // 2))
        for i, caption in enumerate(["a red square", "ein rotes Quadrat", "a blue circle", "a big star"])
    ]
    batch = em.collate(examples)
    passes = []
    em.model.base.vision.register_forward_hook(lambda *_: passes.append(1))

    def loss() -> torch.Tensor:
        torch.manual_seed(3)  # the same negatives drawn
        return em.model(batch)["loss"]

    reused = loss()
    assert len(passes) == 1
    from mvlp_core.model.parts.dual_scoring import DualEncoderScoring

    monkeypatch.delattr(DualEncoderScoring, "match_logit_states")
    passes.clear()
    again = loss()
    assert len(passes) == 2 and torch.allclose(reused, again, atol=1e-5)


def test_load_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"family": "unigen"}')
    with pytest.raises(StageError, match="not a wsmvlp checkpoint"):
        load(tmp_path)


def test_scoring_methods_shapes() -> None:
    model = micro()
    _, pixels, ids, mask = _two(model)
    image, text = model.image_features(pixels), model.text_features(ids, mask)
    assert image.shape == text.shape == (2, model.spec.embed_dim)
    assert torch.allclose(image.norm(dim=-1), torch.ones(2)) and torch.allclose(
        text.norm(dim=-1), torch.ones(2)
    )
    # differentiable: retrieval fine-tuning trains the dual encoder and the ITM head through them
    assert image.requires_grad and text.requires_grad and model.match_logit(pixels, ids, mask).requires_grad
    assert model.itc_temperature() == pytest.approx(0.07)
    fused = model.fused(pixels, ids, mask)
    assert fused.shape == (2, model.spec.dims.hidden_size) and fused.requires_grad, (
        "heads fine-tune through fused"
    )
    fused.sum().backward()
    assert model.fusion_layers[0].crossattention.self.key.weight.grad is not None
    two_images = torch.stack([pixels, pixels.flip(0)], dim=1)  # [B, K=2, 3, S, S] (MaRVL)
    both = model.fused(two_images, ids, mask)
    assert both.shape == (2, 2, model.spec.dims.hidden_size)
    assert torch.allclose(both[:, 0], fused, atol=1e-5)
    assert model.match_logit(pixels, ids, mask).shape == (2,)


# ---------------------------------------------------------------- base from checkpoints
def test_base_loads_xlmr_and_vit_by_name(tmp_path: Path) -> None:
    """A 4-layer XLM-R and a ViT saved locally stand in for the hub checkpoints: the text encoder is
    the first half, the unified encoder the rest with cross-attention copied from self-attention,
    and the monolingual routine (cross-attention skipped) reproduces XLM-R's own MLM logits."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel, XLMRobertaConfig, XLMRobertaForMaskedLM

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
    with torch.no_grad():  # a trained head has non-trivial LayerNorm and bias
        xlmr.lm_head.bias.normal_()
        xlmr.lm_head.layer_norm.weight.normal_()
    xlmr.save_pretrained(tmp_path / "xlmr")
    tok.save_pretrained(str(tmp_path / "xlmr"))
    vit = ViTModel(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        ),
        add_pooling_layer=False,
    ).eval()
    vit.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(image_mean=[0.3, 0.4, 0.5], image_std=[0.2, 0.2, 0.2]).save_pretrained(tmp_path / "vit")
    spec = WsmvlpModelSpec(
        size="base",
        vision=str(tmp_path / "vit"),
        text_encoder=str(tmp_path / "xlmr"),
        image_size=32,
        embed_dim=16,
    )
    model = build(spec).eval()
    assert model.config["text_layers"] == 2 and len(model.text_layers) == 2 and len(model.fusion_layers) == 2
    assert model.config["image_mean"] == pytest.approx([0.3, 0.4, 0.5])
    hf_layers = xlmr.roberta.encoder.layer
    for j, layer in enumerate(model.fusion_layers):
        own = hf_layers[2 + j].attention.state_dict()
        for k, v in layer.crossattention.state_dict().items():
            assert torch.equal(v, own[k]), f"fusion layer {j} cross-attention {k}"
    ids = tok(["ein rotes Quadrat links", "le chat dort"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.lm_head(
            model.unify(model.encode_text(ids["input_ids"], ids["attention_mask"]), ids["attention_mask"])
        )
        theirs = xlmr(**ids).logits
        hf_text = xlmr.roberta(**ids, output_hidden_states=True).hidden_states[2]
        pixels = torch.randn(2, 3, 32, 32)
        assert torch.allclose(model.encode_image(pixels), vit(pixels).last_hidden_state, atol=1e-5)
    keep = ids["attention_mask"].bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-4)
    assert torch.allclose(
        model.encode_text(ids["input_ids"], ids["attention_mask"])[keep], hf_text[keep], atol=1e-5
    )
    assert model.spec.freeze_vision and not any(p.requires_grad for p in model.vision.parameters())


def test_base_unreachable_checkpoint_names_the_field(tmp_path: Path) -> None:
    spec = WsmvlpModelSpec(size="base", text_encoder=str(tmp_path / "missing" / "xlmr"))
    with pytest.raises(StageError, match="model.text_encoder"):
        build(spec)
    with pytest.raises(StageError, match="training texts|text shards"):
        build(WsmvlpModelSpec(size="micro"), [])


# ---------------------------------------------------------------- learning
def train(model: WsmvlpModel, steps: int, lr: float = 3e-3, seed: int = 0) -> dict[str, list[float]]:
    """`steps` AdamW steps on fresh samples of the world (8 images, 12 pairs, 16 sentences);
    every loss_<task> per step."""
    model.generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {k: [] for k in LOSSES}
    for _ in range(steps):
        out = model(collate(items(model, rng), model.tokenizer, model.spec, gen))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        for k in LOSSES:
            history[k].append(float(out[k].detach()))
    return history


def test_tiny_model_learns_every_objective() -> None:
    """Every objective learns: each loss's mean over the last 20 of 300 steps is under 60% of its
    mean over the first 20. ITM is the slowest: it starts at its label prior (1 positive : 2
    negatives, 0.64) and its hard negatives get harder as the contrastive losses learn, so it
    only falls once the fused [CLS] compares the caption's colour with the image's."""
    history = train(micro(seed=1, size="tiny"), steps=300)
    for k, values in history.items():
        first, last = sum(values[:20]) / 20, sum(values[-20:]) / 20
        assert last < 0.6 * first, f"{k}: first 20 steps {first:.3f}, last 20 {last:.3f}"


def _counted_and_torchs_flops(freeze_vision: bool = False) -> tuple[float, float]:
    """(the host's count, torch's FLOP counter) of a forward and backward of all three streams
    (masks full: torch counts padded shapes, the count only real tokens; attention on the math
    kernel, whose matmuls torch counts)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = micro(freeze_vision=freeze_vision)
    model.vision.set_attn_implementation("eager")
    b = batch(model)
    for stream in ("image", "parallel", "mono"):
        for key in [k for k in b[stream] if k.startswith("mask")]:
            b[stream][key] = torch.ones_like(b[stream][key])
    counted = model.train_flops(b)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(b)["loss"].backward()
    return counted, counter.get_total_flops()


def test_counted_training_flops_match_torchs_count_of_the_step() -> None:
    """The MFU numerator (mvlp_core/model/wsmvlp/flops.py), counted on the host from the batch."""
    counted, measured = _counted_and_torchs_flops()
    assert counted == pytest.approx(measured, rel=0.03)


def test_a_frozen_vits_backward_is_left_out_of_the_count_as_torch_finds() -> None:
    """Freezing the ViT saves its backward, attention included (it runs without autograd): the
    count falls by what torch's counter finds it saves (counting the attention's backward anyway
    misses by 6% here)."""
    trained, frozen = _counted_and_torchs_flops(False), _counted_and_torchs_flops(True)
    assert trained[0] - frozen[0] == pytest.approx(trained[1] - frozen[1], rel=0.02)


def test_translation_pairs_are_english_pairs_in_their_own_proportions(monkeypatch) -> None:
    """Paper App. B.1.1: D_t is all of WikiMatrix's English–l pairs (Table 6 lists their natural
    shares), alpha-sampling applies to CC-100 only: the family reads pairs with an English side,
    drawn in proportion to their lines, not by the manifest's alpha-sampled pair weights."""
    from types import SimpleNamespace

    from mvlp_core.model.wsmvlp import data
    from mvlp_core.spec import PretrainSpec

    built = []
    monkeypatch.setattr(data, "MultiStreamBatches", lambda sources, *a, **k: built.append(sources))
    monkeypatch.setattr(data, "text_stream_index", lambda folder: f"index of {folder}")
    spec = SimpleNamespace(model=WsmvlpModelSpec(size="micro"), pretrain=PretrainSpec())
    job = SimpleNamespace(spec=spec, text_dir="text-shard", image_urls=["shard-0.tar"])
    data.train_batches(job, SimpleNamespace(tokenizer=None, image_transform=lambda: None), 0, 1)
    [sources] = built
    assert sources.text == "index of text-shard" and sources.english_only
    assert sources.pair_weights == "natural"
