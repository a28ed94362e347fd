"""A small fine-tune loop over the model's own forward (nanoGPT-style): shuffle, batch, AdamW,
linear warm-up/decay, and after each epoch a dev score; the best epoch's weights are kept.

IGLUE's protocol: zero-shot fine-tunes on English and selects the checkpoint on English dev;
few-shot continues from that model on one language's ``train_<shots>`` file for each learning rate
of the grid and again selects on English dev.

Parameters the model lists in ``HEAD_PARAMS`` (name prefixes: parts pretraining never trains, like
UniGen's multi-image gate) learn at ``lr × head_lr_scale``, as fresh classifier heads usually do:
at the body's rate the gate barely leaves its start before the body has adapted around it.

Training examples come as a list, or as a ``Streamed`` set whose images are decoded as each batch
is drawn (bounded memory: ``mvlp_core.eval.prepared``), by ``workers`` loader processes a few
micro-batches ahead of the step where that is more than 0 (spec ``iglue.loader_workers``).

With ``bf16`` (spec ``iglue.bf16``) the forward runs under bf16 autocast and the backward outside
it, as autocast asks; parameters, gradients and AdamW's state stay fp32.

Parameters named by ``freeze`` (name prefixes) stay fixed: English-only fine-tuning moves the English
tokens' embeddings alone, away from the other languages' that pretraining aligned with them, so
holding the embeddings keeps the alignment zero-shot transfer reads.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from mvlp_core.contract import StageError
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import Streamed
from mvlp_core.train.loop import decay_groups, warmup_linear

Examples = Sequence[Any] | Streamed


@dataclass
class FinetuneResult:
    best_dev: float
    best_epoch: int
    lr: float
    history: list[dict[str, float]] = field(default_factory=list)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What fine-tuning can change of `model` (its trainable parameters and its buffers), copied
    to the host: a best-so-far or start state kept aside takes no GPU memory, and not a copy of
    the frozen towers (UniGen base's ViT-g alone is 4 GB in fp32). `restore` puts it back."""
    params = dict(model.named_parameters(remove_duplicate=False))
    return {
        name: value.detach().to("cpu", copy=True)
        for name, value in model.state_dict().items()
        if name not in params or params[name].requires_grad
    }


def restore(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a `snapshot` back (copied onto each tensor's device); the rest stays as it is."""
    missing = set(state) - set(model.state_dict())
    if missing:
        raise KeyError(f"snapshot entries the model does not have: {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=False)


def param_groups(
    model: torch.nn.Module, lr: float, head_lr_scale: float, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """AdamW groups: the model's ``HEAD_PARAMS`` at ``lr × head_lr_scale``, the rest at ``lr``;
    each split as pretraining splits them (``decay_groups``: matrices decay, biases and norms do
    not, as VOLTA exempts bias and LayerNorm)."""
    heads = tuple(getattr(model, "HEAD_PARAMS", ()))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for is_head, rate in ((False, lr), (True, lr * head_lr_scale)):
        params = [p for n, p in named if bool(heads and n.startswith(heads)) == is_head]
        groups += [{**g, "lr": rate} for g in decay_groups(params, weight_decay) if g["params"]]
    return groups


def draws(examples: Examples, parts: list[list[int]], key: str, workers: int = 0) -> Iterator[list[Any]]:
    """The model examples of each index list in ``parts``, in order: a streamed set decodes their
    images as they are reached, ahead of them in ``workers`` processes (``Streamed.batches``; the
    caller closes the set when its fine-tunes are done)."""
    if isinstance(examples, Streamed):
        return examples.batches(parts, key, workers)
    return ([examples[i] for i in part] for part in parts)


@contextmanager
def frozen(model: torch.nn.Module, freeze: tuple[str, ...]) -> Iterator[None]:
    """Parameters whose names start with a ``freeze`` prefix take no gradient inside the block
    (no optimizer state, no backward into them), and train again after it."""
    named = dict(model.named_parameters())
    unknown = [f for f in freeze if not any(n.startswith(f) for n in named)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in named})
        raise StageError(
            f"fine-tune freeze {unknown} names no parameter of the model; use name "
            f"prefixes such as 'text_encoder.embeddings' (its parts: {tops})"
        )
    held = [p for n, p in named.items() if freeze and n.startswith(freeze) and p.requires_grad]
    for p in held:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in held:
            p.requires_grad_(True)


def _train_step(
    em: EvalModel,
    parts: Iterable[list[Any]],
    n_parts: int,
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    bf16: bool = False,
) -> float | None:
    """One optimizer step on a batch given as its ``n_parts`` micro-batches' examples, whose
    gradients add up to the whole batch's mean (None when no example decodes). Each micro-batch
    is drawn as the loop reaches it and lives only in its forward and backward, so a streamed set's
    decoded images go as soon as it is done."""
    opt.zero_grad(set_to_none=True)
    done, total = 0, 0.0
    for drawn in parts:
        if not drawn:
            continue
        with autocast(em, bf16):
            loss = em.model(em.on_device(em.collate(drawn)))["loss"].float()
        (loss if n_parts == 1 else loss * len(drawn)).backward()
        done, total = done + len(drawn), total + float(loss.detach()) * len(drawn)
    if not done:
        return None
    if n_parts > 1:  # the sum over micro-batches -> the mean over the batch
        for p in params:
            if p.grad is not None:
                p.grad.div_(done)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return total / done


def autocast(em: EvalModel, bf16: bool) -> torch.autocast:
    """bf16 autocast on the model's device where ``bf16`` (spec ``iglue.bf16``), else a no-op."""
    return torch.autocast(em.device.type, dtype=torch.bfloat16, enabled=bf16)


def schedule(total: int, warmup: float) -> Callable[[int], float]:
    """The lr factor at step s: linear warm-up over the first ``warmup`` share of ``total`` steps
    (at least one when the share is not 0), then linear decay to 0 at ``total`` (VOLTA's
    WarmupLinearSchedule; pretraining's ``warmup_linear``)."""
    steps = max(1, int(total * warmup + 1e-9)) if warmup > 0 else 0
    return lambda s: warmup_linear(s, steps, total)


def finetune(
    em: EvalModel,
    examples: Examples,
    dev_score: Callable[[EvalModel], float],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    weight_decay: float = 1e-4,
    warmup: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    grad_accum: int = 1,
    max_steps: int | None = None,
    head_lr_scale: float = 1.0,
    freeze: tuple[str, ...] = (),
    select_start: bool = False,
    bf16: bool = False,
    workers: int = 0,
) -> FinetuneResult:
    """Train ``em.model`` in place on ``examples``; leave it holding the best trained epoch's
    weights on dev, as VOLTA keeps its best checkpoint (its best score starts at -inf). The
    starting weights are scored too (epoch 0 of the history); with ``select_start`` they compete,
    so a fine-tune that only hurts dev keeps the weights it got. ``epochs`` 0 keeps them."""
    if not examples:
        raise StageError(
            "fine-tuning has no training examples (every image missing?); check the "
            "image roots in the spec (iglue.image_roots)"
        )
    with frozen(em.model, freeze):
        rng = random.Random(seed)
        torch.manual_seed(seed)
        groups = param_groups(em.model, lr, head_lr_scale, weight_decay)
        params = [p for g in groups for p in g["params"]]
        opt = torch.optim.AdamW(groups, betas=betas, eps=eps, fused=em.device.type in ("cuda", "cpu"))
        micro = math.ceil(batch_size / grad_accum)
        steps_per_epoch = math.ceil(len(examples) / batch_size)
        total = min(epochs * steps_per_epoch, max_steps or epochs * steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(total, warmup))
        best = FinetuneResult(dev_score(em), 0, lr)
        best.history.append({"epoch": 0, "dev": best.best_dev})
        best_state = snapshot(em.model)
        step = 0
        for epoch in range(1, epochs + 1):
            em.model.train()
            order = list(range(len(examples)))
            rng.shuffle(order)
            losses = []
            batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
            micro_batches = [[b[i : i + micro] for i in range(0, len(b), micro)] for b in batches]
            drawn = draws(examples, [m for ms in micro_batches for m in ms], str(epoch), workers)
            for ms in micro_batches:
                if step >= total:
                    break  # what loader processes drew ahead is dropped with the iterator
                loss = _train_step(em, (next(drawn) for _ in ms), len(ms), opt, params, bf16)
                if loss is None:
                    continue  # every image of the batch undecodable: the next batch takes its step
                sched.step()
                step += 1
                losses.append(loss)
            if step == 0:
                raise StageError(
                    f"fine-tuning: none of the {len(examples)} training examples' images could be "
                    "decoded; check the image roots in the spec (iglue.image_roots)"
                )
            dev = dev_score(em)
            best.history.append({"epoch": epoch, "dev": dev, "loss": sum(losses) / max(1, len(losses))})
            if dev > best.best_dev or (best.best_epoch == 0 and not select_start):
                best.best_dev, best.best_epoch = dev, epoch
                best_state = snapshot(em.model)
            if step >= total:
                break
        restore(em.model, best_state)
    return best


def grid_search(
    em: EvalModel, examples: Examples, dev_score: Callable[[EvalModel], float], lrs: list[float], **kw: Any
) -> FinetuneResult:
    """Fine-tune a copy of the start weights for each learning rate; keep the best on dev."""
    start = snapshot(em.model)
    best_state, best = start, None
    for lr in lrs:
        restore(em.model, start)
        result = finetune(em, examples, dev_score, lr=lr, **kw)
        if best is None or result.best_dev > best.best_dev:
            best, best_state = result, snapshot(em.model)
    restore(em.model, best_state)
    assert best is not None
    return best
