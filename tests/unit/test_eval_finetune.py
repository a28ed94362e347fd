"""The fine-tune loop's learning rates: a model's HEAD_PARAMS learn at lr × head_lr_scale, and
frozen prefixes stay where pretraining left them. Its training images stream: decoded as each batch
is drawn, through a cache bounded in bytes (iglue.image_cache_mb)."""

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mvlp_core.contract import Reject, StageError
from mvlp_core.eval import heads_classify
from mvlp_core.eval.finetune import finetune, frozen, param_groups, restore, schedule, snapshot
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import ImageCache, Prepared
from mvlp_core.spec.iglue import IglueSpec


class _Toy(nn.Module):
    HEAD_PARAMS = ("gate.",)

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(2, 1)
        self.gate = nn.Linear(2, 1)

    def forward(self, batch: dict) -> dict:
        return {"loss": ((self.body(batch["x"]) + self.gate(batch["x"]) - batch["y"]) ** 2).mean()}


def _bound(model: nn.Module) -> EvalModel:
    def collate(examples):
        return {"x": torch.stack([x for x, _ in examples]), "y": torch.stack([y for _, y in examples])}

    return EvalModel(
        model, collate, tuple, lambda image: image, lambda texts: (None, None), lambda path: None
    )


def test_head_parameters_get_their_own_group_at_the_scaled_rate():
    groups = param_groups(_Toy(), 1e-3, 30.0, weight_decay=0.2)
    assert [g["lr"] for g in groups] == [1e-3, 1e-3, 3e-2, 3e-2]
    # weights decay, biases and norm weights do not (VOLTA exempts bias and LayerNorm)
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0, 0.2, 0.0]
    assert [[tuple(p.shape) for p in g["params"]] for g in groups] == [[(1, 2)], [(1,)], [(1, 2)], [(1,)]]
    norm = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    assert [len(g["params"]) for g in param_groups(norm, 1e-3, 30.0)] == [1, 3]  # no heads: body only


def test_schedule_warms_up_over_its_share_then_decays_to_zero():
    """VOLTA's WarmupLinearSchedule (IGLUE's 10%), and none for the papers that fine-tune without."""
    ten = schedule(100, 0.1)
    assert [ten(s) for s in (0, 4, 9, 10, 55, 100)] == [0.1, 0.5, 1.0, 1.0, 0.5, 0.0]
    none = schedule(100, 0.0)
    assert [none(s) for s in (0, 50, 100)] == [1.0, 0.5, 0.0]
    assert schedule(3, 0.1)(0) == 1.0  # a short fine-tune still warms up over one step


def test_the_spec_sets_the_optimiser_and_schedule(monkeypatch):
    """betas, weight decay and warm-up reach AdamW and the schedule: UniGen fine-tunes with
    AdamW (0.9, 0.98) and no warm-up (paper §4.2)."""
    seen: dict[str, Any] = {}
    lrs: list[float] = []

    class Spy(torch.optim.AdamW):
        def __init__(self, groups, **kw):
            seen.update(kw, decays=sorted({g["weight_decay"] for g in groups}))
            super().__init__(groups, **kw)

        def step(self, closure=None):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    _finetuned(epochs=3, batch_size=1, lr=1e-3, weight_decay=0.05, warmup=0.0, betas=(0.9, 0.98))
    assert seen["betas"] == (0.9, 0.98) and seen["decays"] == [0.0, 0.05]
    assert len(lrs) == 24 and lrs[0] == 1e-3 and lrs[12] == pytest.approx(0.5e-3)  # no warm-up
    lrs.clear()
    _finetuned(epochs=3, batch_size=1, lr=1e-3)  # IGLUE's: two of the 24 steps warm up
    assert lrs[:3] == [pytest.approx(0.5e-3), 1e-3, 1e-3]
    # IGLUE's scripts: --adam_betas 0.9 0.999 --adam_epsilon 1e-6 --weight_decay 0.0001
    assert (seen["betas"], seen["eps"], seen["decays"]) == ((0.9, 0.999), 1e-6, [0.0, 1e-4])
    ft = IglueSpec().finetune
    assert (ft.betas, ft.eps, ft.weight_decay, ft.warmup) == ((0.9, 0.999), 1e-6, 1e-4, 0.1)
    with pytest.raises(ValueError, match="each must be in"):
        IglueSpec(finetune={"betas": [0.9, 1.0]})


def _finetuned(**options: Any) -> tuple[_Toy, dict[str, torch.Tensor]]:
    """A seeded _Toy fine-tuned with `options` on 8 random examples, and its parameters from before."""
    torch.manual_seed(0)
    model = _Toy()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples = [(torch.randn(2), torch.randn(1)) for _ in range(8)]
    dev = itertools.count()  # every epoch scores higher than the last: the trained weights are kept
    finetune(_bound(model), examples, lambda em: float(next(dev)), **options)
    return model, before


def test_one_step_moves_the_head_scale_times_further_than_the_body():
    model, before = _finetuned(epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0, head_lr_scale=10.0)
    step = {n: (p.detach() - before[n]).abs() for n, p in model.named_parameters()}
    # Adam's first step moves every coordinate by about its learning rate
    assert torch.allclose(step["body.weight"], torch.full((1, 2), 1e-3), rtol=1e-2)
    assert torch.allclose(step["gate.weight"], torch.full((1, 2), 1e-2), rtol=1e-2)


def _scored(scores: list[float], **options: Any) -> tuple[Any, dict[str, torch.Tensor], _Toy]:
    """A seeded _Toy fine-tuned with dev scores `scores` (the start's first), snapshotting its
    weights at each scoring: (result, weights at each epoch, model)."""
    torch.manual_seed(0)
    model = _Toy()
    examples = [(torch.randn(2), torch.randn(1)) for _ in range(8)]
    seen, given = [], iter(scores)

    def dev(em):
        seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        return next(given)

    result = finetune(_bound(model), examples, dev, batch_size=4, lr=1e-2, **options)
    return result, seen, model


def test_the_best_trained_epoch_is_kept_even_where_the_start_scored_higher():
    """VOLTA's selection (IGLUE's): the best trained epoch on dev, the start never; with
    select_start the start competes and a fine-tune that only hurts dev keeps it."""
    result, seen, model = _scored([0.9, 0.5, 0.7, 0.6], epochs=3)
    assert (result.best_epoch, result.best_dev) == (2, 0.7)
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3] and result.history[0]["dev"] == 0.9
    assert all(torch.equal(p, seen[2][n]) for n, p in model.named_parameters())
    result, seen, model = _scored([0.9, 0.5, 0.7, 0.6], epochs=3, select_start=True)
    assert (result.best_epoch, result.best_dev) == (0, 0.9)
    assert all(torch.equal(p, seen[0][n]) for n, p in model.named_parameters())


def test_frozen_prefixes_stay_fixed_while_the_rest_trains():
    model, before = _finetuned(epochs=2, batch_size=4, lr=1e-2, freeze=("body.",))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in ("body.weight", "body.bias"))
    assert not torch.equal(after["gate.weight"], before["gate.weight"])


def test_a_snapshot_holds_what_fine_tuning_can_change_on_the_host_and_restores_it():
    """The best-so-far and start states kept aside: host copies of the trainable parameters and the
    buffers only, not of frozen towers (on a GPU they would double the model's memory each)."""
    model = _Toy()
    model.register_buffer("scale", torch.ones(1))
    model.body.requires_grad_(False)
    state = snapshot(model)
    assert set(state) == {"gate.weight", "gate.bias", "scale"}
    assert all(t.device.type == "cpu" for t in state.values())
    kept = {n: t.clone() for n, t in state.items()}
    with torch.no_grad():
        model.gate.weight.add_(1.0)
        model.scale.mul_(3.0)
    assert torch.equal(state["gate.weight"], kept["gate.weight"])  # a copy, not the live tensor
    body = model.body.weight.detach().clone()
    restore(model, state)
    assert torch.equal(model.gate.weight, kept["gate.weight"]) and torch.equal(model.scale, kept["scale"])
    assert torch.equal(model.body.weight, body)
    with pytest.raises(KeyError, match="other.weight"):
        restore(model, {"other.weight": torch.zeros(1)})


def test_a_freeze_prefix_that_names_nothing_is_an_error_listing_the_parts():
    with pytest.raises(
        StageError, match=r"\['text_encoder.embeddings'\] names no parameter.*\['body', 'gate'\]"
    ):
        with frozen(_Toy(), ("text_encoder.embeddings",)):
            pass


# streaming: images decode as each batch is drawn, through a cache bounded in bytes ----------------

IMAGE_BYTES = 3 * 4 * 4 * 4  # one decoded 4x4 RGB image as float32


class _CountingTransform:
    """PIL image -> [3,4,4] float tensor, counting the images decoded."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: Any) -> torch.Tensor:
        self.calls += 1
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def _pngs(folder: Path, n: int, bad: tuple[int, ...] = ()) -> list[Path]:
    """n 4x4 PNGs, those at ``bad`` not images at all."""
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        if i in bad:
            path.write_bytes(b"not an image")
        else:
            Image.new("RGB", (4, 4), (20 * i, 0, 0)).save(path)
        paths.append(path)
    return paths


class _ImageToy(nn.Module):
    """Regresses zero from two of an image's channel means: enough to take optimizer steps."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(2, 1)

    def forward(self, batch: dict) -> dict:
        return {"loss": (self.body(batch["x"]) ** 2).mean()}


def _streaming_model(transform: _CountingTransform, seen: list[int]) -> EvalModel:
    """An EvalModel over _ImageToy whose collate records how many images were decoded so far."""

    def collate(examples: list[dict]) -> dict:
        seen.append(transform.calls)
        return {"x": torch.stack([e["image"].mean(dim=(1, 2))[:2] for e in examples])}

    return EvalModel(_ImageToy(), collate, dict, transform, lambda texts: (None, None), lambda path: None)


def _items(paths: list[Path]) -> list[Prepared]:
    return [Prepared(f"i{n}", (p,), "a hypothesis", "en", "entailment") for n, p in enumerate(paths)]


def test_the_image_cache_holds_at_most_its_bytes_least_recently_used_out(tmp_path: Path) -> None:
    a, b, c = _pngs(tmp_path, 3)
    transform = _CountingTransform()
    cache = ImageCache(transform, max_bytes=2 * IMAGE_BYTES)
    for ref in (a, b, a):  # a again: cached, and now the most recent
        cache.get(ref)
    assert transform.calls == 2
    cache.get(c)  # b, the least recently used, makes room
    assert len(cache) == 2 and cache.nbytes == 2 * IMAGE_BYTES
    cache.get(a)
    assert transform.calls == 3
    cache.get(b)
    assert transform.calls == 4 and cache.nbytes <= 2 * IMAGE_BYTES


def test_fine_tuning_decodes_each_batch_as_it_is_drawn(tmp_path: Path) -> None:
    """Building the training set decodes nothing; each step decodes at most its batch; the cache
    never holds more than its bound, so memory does not grow with the training set."""
    transform, seen = _CountingTransform(), []
    em = _streaming_model(transform, seen)
    cache = ImageCache(transform, max_bytes=3 * IMAGE_BYTES)
    examples = heads_classify.training_examples(
        em, _items(_pngs(tmp_path, 12)), heads_classify.PROMPTS["xvnli"], cache
    )
    assert len(examples) == 12 and transform.calls == 0  # nothing decoded up front
    finetune(em, examples, lambda em: 0.0, epochs=2, batch_size=4, lr=1e-3)
    assert len(seen) == 6  # 3 batches an epoch
    assert all(now - before <= 4 for before, now in zip([0, *seen], seen))
    assert transform.calls > 12  # the second epoch decodes again: the cache does not hold the set
    assert len(cache) <= 3 and cache.nbytes <= 3 * IMAGE_BYTES


def test_an_undecodable_training_image_is_a_reject_and_the_rest_trains(tmp_path: Path) -> None:
    transform = _CountingTransform()
    em = _streaming_model(transform, [])
    paths = _pngs(tmp_path, 6, bad=(1,))
    prompt = heads_classify.PROMPTS["xvnli"]
    examples = heads_classify.training_examples(em, _items(paths), prompt, ImageCache(transform, 10**6))
    finetune(em, examples, lambda em: 0.0, epochs=1, batch_size=4, lr=1e-3)
    assert examples.rejects == [Reject("i1", "bad_image", str(paths[1]))]

    (tmp_path / "broken").mkdir()
    broken = _pngs(tmp_path / "broken", 2, bad=(0, 1))
    nothing = heads_classify.training_examples(em, _items(broken), prompt, ImageCache(transform, 10**6))
    with pytest.raises(StageError, match="none of the 2 training examples' images could be decoded"):
        finetune(em, nothing, lambda em: 0.0, epochs=1, batch_size=4, lr=1e-3)


def test_units_fine_tune_with_the_specs_optimiser_and_schedule():
    from mvlp_core.eval.selection import finetune_settings
    from mvlp_core.eval.units import _tuning
    from mvlp_core.spec.iglue import IglueSpec

    cfg = IglueSpec(
        finetune={
            "warmup": 0,
            "betas": [0.9, 0.98],
            "weight_decay": 0.2,
            "tasks": {"wit": {"batch_size": 96}},
        }
    )

    class Ev:
        def freeze(self, extra: tuple[str, ...]) -> tuple[str, ...]:
            return extra

    kw = _tuning(finetune_settings(cfg, "wit"), cfg, Ev())
    assert (kw["warmup"], kw["betas"], kw["weight_decay"], kw["batch_size"]) == (0, (0.9, 0.98), 0.2, 96)
    assert kw["eps"] == 1e-6
    assert set(kw) <= set(finetune.__code__.co_varnames)  # every setting is one finetune() takes


def test_micro_batches_add_up_to_the_whole_batchs_gradient():
    """grad_accum splits a step's batch (IGLUE's scripts accumulate 4): for a loss without in-batch
    terms the step's gradient is the whole batch's mean, micro-batches of uneven size included."""
    from mvlp_core.eval.finetune import _train_step

    torch.manual_seed(0)
    model = _Toy()
    em = _bound(model)
    params = list(model.parameters())
    with torch.no_grad():  # small outputs and targets: gradients under the clip
        for p in params:
            p.mul_(0.01)
    examples = [(torch.randn(2), 0.05 * torch.randn(1)) for _ in range(8)]
    grads = {}
    for micro in (8, 4, 3):  # 3: micro-batches of 3, 3 and 2
        parts = [examples[i : i + micro] for i in range(0, 8, micro)]
        loss = _train_step(em, iter(parts), len(parts), torch.optim.SGD(params, lr=0.0), params)
        grads[micro] = ([p.grad.clone() for p in params], loss)
    for micro in (4, 3):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[8][0], grads[micro][0])), micro
        assert grads[micro][1] == pytest.approx(grads[8][1])
    # a real gradient, under the clip (1.0), so the test sees the mean and not a clipped sum
    assert 1e-3 < float(torch.cat([g.flatten() for g in grads[8][0]]).norm()) < 1.0 / 3


def test_few_shot_batches_are_iglues_for_the_task_and_shots():
    """IGLUE's few-shot scripts set the batch by task and shots (xvnli/48: --batch_size 64;
    xflickrco/100: --batch_size 32 --gradient_accumulation_steps 2)."""
    from mvlp_core.eval.units import few_shot_batch
    from mvlp_core.spec.iglue import IglueSpec

    cfg = IglueSpec()
    assert few_shot_batch(cfg, "xvnli", "48") == {"batch_size": 64, "grad_accum": 1}
    assert few_shot_batch(cfg, "marvl", "10x2") == {"batch_size": 32, "grad_accum": 1}
    assert few_shot_batch(cfg, "xflickrco", "100") == {"batch_size": 32, "grad_accum": 2}
    assert few_shot_batch(cfg, "xvnli", "7") == {}  # shots IGLUE does not run: the task's batch
    assert few_shot_batch(IglueSpec(few_shot_batch="finetune"), "xvnli", "48") == {}


def test_bf16_on_a_gpu_without_native_bf16_is_refused_naming_it(tmp_path, monkeypatch):
    """iglue.bf16 on a pre-Ampere GPU (bf16 only emulated, slowly): a StageError naming the GPU and
    the fix, before any model loads; a GPU with native bf16 goes on to load the model."""
    from mvlp_core.contract import StageError
    from mvlp_core.eval import units
    from mvlp_core.spec import load_spec

    native: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bool(native))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    cfg = load_spec("demo", ["iglue.bf16=true", "iglue.device=cuda:0"], workdir=tmp_path).iglue
    with pytest.raises(
        StageError, match=r"cuda:0 \(Tesla V100-SXM2-32GB\) has no native bf16; set iglue.bf16: false"
    ):
        units._load(tmp_path / "model", cfg, "xvnli")
    native.append(True)
    with pytest.raises(StageError, match="no model at"):  # past the check: the (missing) model
        units._load(tmp_path / "model", cfg, "xvnli")
