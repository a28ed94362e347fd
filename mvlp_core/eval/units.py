"""The work of the iglue-eval stage as units (``mvlp_core.eval.selection``): ``<task>.finetune``
(fine-tune on English, select on English dev, save) and ``<task>.<setting>.<lang>`` (zero-shot and
translate-test test the saved model; few-shot first continues it on ``train_<shots>`` of the
language over the learning-rate grid, selecting on English dev). ``compute_unit`` is a plain
picklable function: the in-process runner calls it, ``ray_jobs/iglue_eval.py`` maps it over Ray
tasks. Each writes its result JSON atomically, so a unit is either done or not; a test unit's
result names the file and the split it tested on (``mvlp_core.eval.tasks``).

The heads a task takes follow the loaded model's family (its ``IGLUE`` map, the family recorded in
the saved folder): ``generative`` (UniGen: ``heads_classify``, ``heads_qa``, ``heads_retrieval``)
or discriminative (``heads_discriminative``): there the fine-tune unit puts a fresh head on the model
(a ``task_model.TaskModel``), fine-tunes it holding the family's ``FINETUNE_FREEZE`` besides the
spec's ``freeze``, and saves it; the test units load it back, head and all.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from mvlp_core import atomic
from mvlp_core.contract import Reject, StageError
from mvlp_core.eval import (
    data_retrieval,
    heads_classify,
    heads_discriminative,
    heads_qa,
    heads_retrieval,
    metrics,
    task_model,
)
from mvlp_core.eval.finetune import autocast, finetune, grid_search
from mvlp_core.eval.images import ImageRef, ImageRoots, image_roots
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import AugmentedImages, ImageCache, ImageSource, Prepared, Streamed
from mvlp_core.eval.selection import (
    Needed,
    Unit,
    finetune_settings,
    layout_of,
    needed_for_few_shot,
    needed_for_selection,
    needed_for_test,
    needed_for_training,
)
from mvlp_core.eval.tasks import FAMILY, FEW_SHOT_BATCH, HEADLINE
from mvlp_core.model import families
from mvlp_core.model.parts.augment import AugmentedSquare
from mvlp_core.spec import IglueFinetuneSpec, IglueSpec, PipelineSpec
from mvlp_core.spec.augment import AugmentSpec

FINETUNED = "_finetuned"
PREDICTIONS = "predictions"
MB = 2**20


def _tuning(ft: IglueFinetuneSpec, cfg: IglueSpec, ev: Evaluator) -> dict[str, Any]:
    """The fine-tune settings zero-shot and few-shot share: batch, optimiser, schedule, seed, head
    rate, frozen parts."""
    return {
        "batch_size": ft.batch_size,
        "grad_accum": ft.grad_accum,
        "weight_decay": ft.weight_decay,
        "warmup": ft.warmup,
        "betas": ft.betas,
        "eps": ft.eps,
        "seed": cfg.seed,
        "head_lr_scale": ft.head_lr_scale,
        "freeze": ev.freeze(tuple(ft.freeze)),
        "select_start": ft.select_start,
        "bf16": cfg.bf16,
        "workers": cfg.loader_processes(),
    }


def few_shot_batch(cfg: IglueSpec, task: str, shots: str) -> dict[str, int]:
    """The few-shot fine-tune's batch and micro-batches where IGLUE's scripts set them (spec
    ``iglue.few_shot_batch``), else nothing: the task's fine-tune batch stays."""
    found = FEW_SHOT_BATCH.get(task, {}).get(shots) if cfg.few_shot_batch == "iglue" else None
    return {} if found is None else {"batch_size": found[0], "grad_accum": found[1]}


def _cap(items: list, n: int | None, seed: int) -> list:
    if n is None or len(items) <= n:
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def _require(need: Needed | None, unit: str) -> Needed:
    """``need`` when its file exists, else a StageError naming the file (or the unit, where IGLUE
    has no such file) and how to supply it."""
    if need is None:
        raise StageError(f"iglue-eval unit {unit}: IGLUE has no file for it; drop it from the spec")
    if not need.path.exists():
        raise StageError(f"iglue-eval: {need.what} not found at {need.path}; {need.fix}")
    return need


class Evaluator:
    """One task's data handling and heads for a loaded model. A model whose family reads the task
    with a discriminative head and that has none yet (the pretrained model, in the fine-tune unit)
    gets a fresh one: ``self.em`` is then the wrapped model, what fine-tuning trains and saves."""

    def __init__(self, em: EvalModel, cfg: IglueSpec, task: str) -> None:
        self.em, self.cfg, self.task = em, cfg, task
        self.family = FAMILY[task]
        self.roots = ImageRoots(image_roots(cfg.root, cfg.image_roots))
        self.cache = ImageCache(em.transform, cfg.image_cache_mb * MB)
        self.selected_on: Path | None = None  # the dev file dev_score last read
        self.model_family = None if em.family is None else families.family(em.family)
        self.discriminative = self.model_family is not None and heads_discriminative.is_discriminative(
            getattr(self.model_family, "IGLUE", {}), task, str(em.family)
        )
        ft = finetune_settings(cfg, task)
        if self.discriminative:
            self.em = self._with_head(em)
            self.em.model.itm_negatives = ft.itm_negatives
        self.train_images = self._train_images(ft.augment)

    def _train_images(self, augment: AugmentSpec | None) -> ImageSource:
        """Where training sets draw their images: the bounded cache dev and test read too, or with
        ``iglue.finetune.augment`` a fresh augmented draw each time, cropped to the model's size."""
        if augment is None:
            return self.cache
        size = getattr(self.em.transform, "size", None)
        if not isinstance(size, int):
            raise StageError(
                "iglue.finetune.augment: this model's image transform is not a square resize "
                "(images.RGBSquare), so there is no size to crop to; set iglue.finetune.augment: null"
            )
        return AugmentedImages(AugmentedSquare(size, **augment.model_dump()), self.cfg.seed)

    def _with_head(self, em: EvalModel) -> EvalModel:
        """``em`` as a TaskModel for this task: as loaded, or with a fresh head."""
        if isinstance(em.model, task_model.TaskModel):
            if em.model.task != self.task:
                raise StageError(
                    f"iglue-eval {self.task}: the loaded model was fine-tuned for {em.model.task}"
                )
            return em
        layout = layout_of(self.cfg)
        train = layout.train(self.task) if self.task == "xgqa" else None
        return task_model.wrap(em, self.task, heads_discriminative.labels_for(self.task, layout.root, train))

    def freeze(self, spec_freeze: tuple[str, ...]) -> tuple[str, ...]:
        """The prefixes fine-tuning holds: the spec's; with a discriminative head, also the family's
        ``FINETUNE_FREEZE``, all named inside the TaskModel."""
        if not self.discriminative:
            return spec_freeze
        family_freeze = getattr(self.model_family, "FINETUNE_FREEZE", ())
        return heads_discriminative.freeze_prefixes(self.task, spec_freeze, family_freeze)

    # classification / QA ------------------------------------------------------------------------
    def prepare(self, path: Path, lang: str) -> tuple[list[Prepared], list[Reject]]:
        fn = {
            "nli": heads_classify.prepare_xvnli,
            "pair": heads_classify.prepare_marvl,
            "qa": heads_qa.prepare_xgqa,
        }[self.family]
        return fn(path, self.roots, lang)

    def evaluate(self, path: Path, lang: str, cap: int | None) -> dict[str, Any]:
        """The scores of ``path``'s items (at most ``cap``), under bf16 autocast where the spec
        says (``iglue.bf16``)."""
        with autocast(self.em, self.cfg.bf16):
            return self._evaluate(path, lang, cap)

    def _evaluate(self, path: Path, lang: str, cap: int | None) -> dict[str, Any]:
        if self.family == "retrieval":
            return self._evaluate_retrieval(path, cap)
        items, rejects = self.prepare(path, lang)
        file_items = len(items) + len(rejects)
        items = _cap(items, cap, self.cfg.seed)
        n_in = len(items) + len(rejects)
        if self.discriminative:
            preds, bad = heads_discriminative.predict(self.em, items, self.cache, self.cfg.batch_size)
        elif self.family == "qa":
            preds, bad = heads_qa.predict(
                self.em, items, self.cache, self.cfg.batch_size, self.cfg.max_new_tokens
            )
        else:
            preds, bad = heads_classify.predict(
                self.em, items, heads_classify.PROMPTS[self.task], self.cache, self.cfg.batch_size
            )
        rejects += bad
        scored = [i for i in items if i.id in preds]
        gold, pred = [i.gold for i in scored], [preds[i.id] for i in scored]
        if self.family == "qa":
            result = metrics.answer_accuracy(gold, pred, self.cfg.answer_normalisation)
            top = Counter(gold).most_common(1)
            chance = metrics.percent(top[0][1], len(gold)) if top else 0.0
        else:
            result = {"accuracy": metrics.accuracy(gold, pred)}
            chance = 100.0 / len(heads_classify.PROMPTS[self.task].labels)
        key = "questionId" if self.family == "qa" else "id"
        return {
            "metrics": result,
            "chance": chance,
            "file_items": file_items,
            "samples_in": n_in,
            "samples_out": len(scored),
            "rejects": rejects,
            "predictions": [{key: i.id, "prediction": preds[i.id]} for i in scored],
        }

    def _retrieval_set(
        self, path: Path, cap: int | None
    ) -> tuple[data_retrieval.RetrievalSet, list[ImageRef], list[Reject]]:
        """The file's images that resolved, capped at `cap`, and the rejects of those that did not
        (all of them: `file_items` counts the whole file)."""
        rset = data_retrieval.load(path)
        paths, rejects = heads_retrieval.resolve(rset, self.roots, wit=self.task == "wit")
        rset, kept = heads_retrieval.drop_missing(rset, paths)
        if cap is not None and len(rset.images) > cap:
            rset, kept = self._capped(rset, kept, cap)
        return rset, kept, rejects

    def _capped(
        self, rset: data_retrieval.RetrievalSet, kept: list[ImageRef], cap: int
    ) -> tuple[data_retrieval.RetrievalSet, list[ImageRef]]:
        keep = set(_cap(list(range(len(rset.images))), cap, self.cfg.seed))
        return heads_retrieval.drop_missing(rset, [p if i in keep else None for i, p in enumerate(kept)])

    def _evaluate_retrieval(self, path: Path, cap: int | None) -> dict[str, Any]:
        rset, paths, rejects = self._retrieval_set(path, None)
        file_items = len(rset.images) + len(rejects)
        if cap is not None and len(rset.images) > cap:
            rset, paths = self._capped(rset, paths, cap)
        n_in = len(rset.images) + len(rejects)
        heads = heads_discriminative if self.discriminative else heads_retrieval
        result, bad, top20 = heads.evaluate(self.em, rset, paths, self.cache, self.cfg.rerank_k)
        n_images = len(rset.images) - len(bad)
        return {
            "metrics": result,
            "chance": metrics.percent(1, n_images) if n_images else 0.0,
            "file_items": file_items,
            "samples_in": n_in,
            "samples_out": n_images,
            "rejects": rejects + bad,
            "predictions": top20,
        }

    # training -------------------------------------------------------------------------------------
    def training_examples(self, path: Path, lang: str, cap: int | None) -> tuple[Streamed, list[Reject]]:
        """The examples of a training file, images decoded (and augmented, where the spec says)
        as batches are drawn, and the items whose images did not resolve."""
        if self.family == "retrieval":
            rset, paths, rejects = self._retrieval_set(path, cap)
            if self.discriminative:
                return heads_discriminative.retrieval_examples(
                    self.em, rset, paths, self.train_images
                ), rejects
            return heads_retrieval.training_examples(self.em, rset, paths, self.train_images, lang), rejects
        items, rejects = self.prepare(path, lang)
        items = _cap(items, cap, self.cfg.seed)
        if self.discriminative:
            return heads_discriminative.training_examples(self.em, items, self.train_images), rejects
        if self.family == "qa":
            return heads_qa.training_examples(self.em, items, self.train_images), rejects
        return heads_classify.training_examples(
            self.em, items, heads_classify.PROMPTS[self.task], self.train_images
        ), rejects

    def dev_score(self, few_shot_lang: str | None = None) -> float:
        """The dev score that selects a fine-tune: English dev, or for a few-shot xGQA unit its own
        language's (as IGLUE selects it)."""
        need = needed_for_selection(layout_of(self.cfg), self.task, few_shot_lang)
        dev = self.selected_on = _require(need, f"{self.task} dev").path
        out = self.evaluate(dev, few_shot_lang if need.lang_dev else "en", self.cfg.max_dev_items)
        key = "accuracy_normalised" if self.family == "qa" else HEADLINE[self.task]
        return out["metrics"][key]


def _load(model_dir: Path, cfg: IglueSpec, task: str) -> EvalModel:
    if cfg.bf16 and cfg.device.startswith("cuda") and torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported(including_emulation=False):  # pre-Ampere: emulated, slow
            raise StageError(
                f"iglue.bf16: the GPU {cfg.device} ({torch.cuda.get_device_name(cfg.device)}) has no "
                "native bf16; set iglue.bf16: false"
            )
    em = EvalModel.load(model_dir, cfg.image_size, cfg.max_text_len.get(task)).to(cfg.device)
    torch.manual_seed(cfg.seed)
    return em


def _write(path: Path, obj: Any) -> None:
    atomic.write_json(path, obj)


def _rejects_json(rejects: list[Reject]) -> list[dict[str, str]]:
    return [{"key": str(r.key), "reason": r.reason, "detail": r.detail} for r in rejects]


def compute_unit(spec: PipelineSpec, model_dir: str, out_dir: str, name: str) -> dict[str, Any]:
    """Run one unit and write its result JSON; return it. Picklable for Ray.

    One torch thread: units run side by side (Ray tasks, one CPU each), and on a shared CPU the
    tiny model is many times slower with more threads than cores."""
    torch.set_num_threads(1)
    cfg, unit, out = spec.iglue, Unit.parse(name), Path(out_dir)
    layout = layout_of(cfg)
    tuned = out / FINETUNED / unit.task
    if unit.setting == "finetune":
        ev = Evaluator(_load(Path(model_dir), cfg, unit.task), cfg, unit.task)
        em = ev.em  # with a fresh head where the family reads the task discriminatively
        ft = finetune_settings(cfg, unit.task)
        info: dict[str, Any] = {"epochs": ft.epochs}
        rejects: list[Reject] = []
        n_in = n_out = 0
        if ft.epochs:
            train = _require(needed_for_training(layout, unit.task), name).path
            examples, rejects = ev.training_examples(train, "en", ft.max_train_items)
            try:
                res = finetune(
                    em,
                    examples,
                    lambda _: ev.dev_score(),
                    epochs=ft.epochs,
                    lr=ft.lr,
                    max_steps=ft.max_steps,
                    **_tuning(ft, cfg, ev),
                )
            finally:
                examples.close()  # its loader processes, if any
            # images are decoded as batches are drawn: the undecodable ones are known only now
            n_out = len(examples) - len(examples.rejects)
            rejects += examples.rejects
            n_in = n_out + len(rejects)
            info.update(best_dev=res.best_dev, best_epoch=res.best_epoch, lr=res.lr, history=res.history)
        em.save(tuned)
        result = {
            "unit": name,
            "task": unit.task,
            "setting": "finetune",
            "finetune": info,
            "samples_in": n_in,
            "samples_out": n_out,
            "rejects": _rejects_json(rejects),
        }
        _write(unit.result_path(out), result)
        return result

    if not tuned.exists():
        raise StageError(
            f"iglue-eval unit {name}: the English fine-tuned model {tuned} is missing; "
            f"unit {unit.task}.finetune must run first"
        )
    ev = Evaluator(_load(tuned, cfg, unit.task), cfg, unit.task)
    em = ev.em
    info = {}
    if unit.setting == "few-shot":
        shots = cfg.few_shot[unit.task]
        train = _require(needed_for_few_shot(layout, unit, shots), name).path
        examples, _ = ev.training_examples(train, unit.lang, None)
        ft = finetune_settings(cfg, unit.task)
        try:
            res = grid_search(
                em,
                examples,
                lambda _: ev.dev_score(unit.lang),
                cfg.lr_grid,
                epochs=cfg.few_shot_epochs,
                **{**_tuning(ft, cfg, ev), **few_shot_batch(cfg, unit.task, shots)},
            )
        finally:
            examples.close()
        info = {"shots": shots, "lr": res.lr, "best_dev": res.best_dev, "best_epoch": res.best_epoch}
        info["dev"] = str(ev.selected_on)  # the dev file that selected lr and epoch
    test = _require(needed_for_test(layout, unit), name)
    out_eval = ev.evaluate(test.path, unit.lang, cfg.max_test_items)
    _check_images(name, out_eval, cfg.max_missing_test_images)
    _write(out / PREDICTIONS / unit.task / unit.setting / f"{unit.lang}.json", out_eval["predictions"])
    result = {
        "unit": name,
        "task": unit.task,
        "setting": unit.setting,
        "lang": unit.lang,
        "file": str(test.path),
        "split": test.split,
        "metrics": out_eval["metrics"],
        "headline": HEADLINE[unit.task],
        "score": out_eval["metrics"][HEADLINE[unit.task]],
        "chance": out_eval["chance"],
        "samples_in": out_eval["samples_in"],
        "samples_out": out_eval["samples_out"],
        "rejects": _rejects_json(out_eval["rejects"]),
        "few_shot": info,
    }
    _write(unit.result_path(out), result)
    return result


IMAGE_REJECTS = ("missing_image", "bad_image")


def _check_images(name: str, out_eval: dict[str, Any], allowed: float) -> None:
    """A test unit scored without some of its images is not IGLUE's number: a StageError past the
    spec's allowance (`iglue.max_missing_test_images`), naming the count and a few of them."""
    lost = [r for r in out_eval["rejects"] if r.reason in IMAGE_REJECTS]
    total = out_eval["file_items"]  # the rejects are the whole file's, `max_test_items` or not
    if lost and len(lost) > allowed * total:
        shown = ", ".join(f"{r.key} ({r.reason}: {r.detail})" for r in lost[:3])
        raise StageError(
            f"iglue-eval unit {name}: {len(lost)} of {total} test items have no usable image ({shown}"
            f"{', ...' if len(lost) > 3 else ''}); IGLUE scores every item, so this score would not be "
            "comparable. Supply the images (iglue.image_roots), or accept a share of them missing with "
            "iglue.max_missing_test_images"
        )


def read_result(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = Unit.parse(name).result_path(out_dir)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
