"""Which iglue-eval units a spec selects and which annotation files they read, without torch:
``mvlp plan`` checks them before any model loads, and the stage plans from the same list.

Units: ``<task>.finetune`` (fine-tune on English, select on English dev, save) and
``<task>.<setting>.<lang>`` (zero-shot and translate-test test the saved model; few-shot first
continues it on ``train_<shots>`` of the language, selecting on English dev).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvlp_core.eval.tasks import IGLUE_LANGUAGES, IGLUE_REPO, Layout, missing_fix
from mvlp_core.spec import IglueFinetuneSpec, IglueSpec, PipelineSpec

RESULTS = "results"


@dataclass(frozen=True)
class Unit:
    task: str
    setting: str  # "finetune" or an IGLUE setting
    lang: str = "en"

    @property
    def name(self) -> str:
        return (
            f"{self.task}.finetune"
            if self.setting == "finetune"
            else f"{self.task}.{self.setting}.{self.lang}"
        )

    @classmethod
    def parse(cls, name: str) -> Unit:
        parts = name.split(".")
        return cls(parts[0], "finetune") if parts[1] == "finetune" else cls(*parts)

    def result_path(self, out_dir: Path) -> Path:
        if self.setting == "finetune":
            return Path(out_dir) / RESULTS / self.task / "finetune.json"
        return Path(out_dir) / RESULTS / self.task / self.setting / f"{self.lang}.json"


@dataclass(frozen=True)
class ModelUnits:
    """The units still to run for one model: what an engine's hook is given, one per model."""

    spec: PipelineSpec
    model_dir: str
    out_dir: str
    names: list[str]


@dataclass(frozen=True)
class Needed:
    """An annotation file a unit reads: what it is, where, and how to supply it."""

    what: str
    path: Path
    fix: str
    split: str = ""  # a test unit's file: the split it holds (test, or dev: iglue.dev_when_no_test)
    lang_dev: bool = False  # a dev set in the unit's own language, not English


def layout_of(cfg: IglueSpec) -> Layout:
    """The spec's IGLUE root, with its choice for test files it lacks (`iglue.dev_when_no_test`)."""
    return Layout(Path(cfg.root), cfg.dev_when_no_test)


def languages(cfg: IglueSpec, task: str) -> list[str]:
    return ["en", *cfg.languages.get(task, IGLUE_LANGUAGES[task])]


def finetune_settings(cfg: IglueSpec, task: str) -> IglueFinetuneSpec:
    """The settings `task` fine-tunes with: the shared ones, its own (`finetune.tasks`) where given."""
    own = cfg.finetune.tasks.get(task)
    changes = own.model_dump(exclude_none=True) if own is not None else {}
    return cfg.finetune.model_copy(update={**changes, "tasks": {}})


def plan_units(cfg: IglueSpec) -> list[Unit]:
    """Fine-tunes first (every test unit of a task needs its fine-tuned model), then tests.
    English has no translate-test; few-shot is per non-English language with a shots file."""
    out = [Unit(t, "finetune") for t in cfg.tasks]
    layout = layout_of(cfg)
    for task in cfg.tasks:
        for setting in cfg.settings:
            for lang in languages(cfg, task):
                if setting == "translate-test" and layout.test(task, lang, setting) is None:
                    continue
                if setting == "few-shot":
                    shots = layout.few_shot(task, lang, cfg.few_shot.get(task, ""))
                    if lang == "en" or task not in cfg.few_shot or shots is None or not shots.exists():
                        continue  # IGLUE has few-shot files for some languages only
                out.append(Unit(task, setting, lang))
    return out


def needed_for_test(layout: Layout, unit: Unit) -> Needed | None:
    """The test file of a test unit (None for a setting IGLUE has no file for)."""
    found = layout.test(unit.task, unit.lang, unit.setting)
    if found is None:
        return None
    what = f"{unit.task} {unit.lang} {unit.setting} {found.split} file"
    fix = missing_fix("test", unit.task, unit.lang)
    if unit.setting == "translate-test":
        fix = f"copy it there from IGLUE ({IGLUE_REPO}), or drop translate-test from iglue.settings"
    return Needed(what, found.path, fix, found.split)


def needed_for_few_shot(layout: Layout, unit: Unit, shots: str) -> Needed | None:
    """The ``train_<shots>`` file a few-shot unit continues fine-tuning on (None: the task has none)."""
    path = layout.few_shot(unit.task, unit.lang, shots)
    fix = (
        f"IGLUE has few-shot files for some languages and sizes only: set iglue.few_shot.{unit.task} "
        "to a size it has, or drop few-shot from iglue.settings"
    )
    return None if path is None else Needed(f"{unit.task} {unit.lang} train_{shots}", path, fix)


def needed_for_training(layout: Layout, task: str) -> Needed:
    return Needed(f"{task} English training set", layout.train(task), missing_fix("train", task))


def needed_for_selection(layout: Layout, task: str, few_shot_lang: str | None = None) -> Needed:
    """The dev set that selects a fine-tune: English, or a few-shot unit's own language where
    IGLUE selects on it (xGQA: ``few_shot/<lang>/dev.json``; the other tasks select on English)."""
    own = layout.few_shot_dev(task, few_shot_lang) if few_shot_lang else None
    if own is not None:
        what = f"{task} {few_shot_lang} dev set (selects the few-shot fine-tune)"
        return Needed(what, own, missing_fix("dev", task, few_shot_lang), lang_dev=True)
    return Needed(
        f"{task} English dev set (selects the fine-tuned checkpoint)",
        layout.dev(task),
        missing_fix("dev", task),
    )


def annotation_files(cfg: IglueSpec) -> list[Needed]:
    """Every annotation file the selected units read, once each: English train and dev where a
    task fine-tunes, dev for few-shot selection, and each test unit's file."""
    layout = layout_of(cfg)
    found: dict[Path, Needed] = {}
    for unit in plan_units(cfg):
        if unit.setting == "finetune":
            wanted = [needed_for_training(layout, unit.task), needed_for_selection(layout, unit.task)]
            wanted = wanted if finetune_settings(cfg, unit.task).epochs else []
        else:
            wanted = [needed_for_test(layout, unit)]
            wanted += (
                [needed_for_selection(layout, unit.task, unit.lang)] if unit.setting == "few-shot" else []
            )
        for need in wanted:
            if need is not None:
                found.setdefault(need.path, need)
    return list(found.values())


def unit_resources(cfg: IglueSpec) -> dict[str, Any]:
    """What one unit asks Ray for: a CPU and one more for each fine-tuning loader process
    (``iglue.loader_workers``; a test unit asks for them too, so that ``iglue.workers`` units of any
    kind fill a local Ray sized for that many), and ``iglue.gpus_per_unit`` GPUs when
    ``iglue.device`` is a GPU (``cuda...``). Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPUs a task was given, so a task
    that asks for none sees no GPU at all (with ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO``, which
    ray_jobs/connect.py sets)."""
    on_gpu = cfg.device.startswith("cuda")
    return {"num_cpus": 1 + cfg.loader_processes(), "num_gpus": cfg.gpus_per_unit if on_gpu else 0}
