"""The five IGLUE tasks: languages, metric, and where each setting's files live under a root
laid out like IGLUE's ``datasets/`` folder (the real one, or the synthetic world's ``iglue/``).

Which test split each (task, language) has, checked against IGLUE's published ``datasets/``
(github.com/e-bug/iglue) and the copy in ``shared/data/iglue``:

- XVNLI: ``XVNLI/annotations/<lang>/test.jsonl`` for en, ar, es, fr, ru; translate-test
  ``annotations_machine-translate/<lang>/test.jsonl`` for ar, es, fr, ru. All published.
- xGQA: English ``gqa/annotations/testdev_balanced_questions.json`` (published). The other
  languages' test is ``xGQA/annotations/zero_shot/testdev_balanced_questions_<lang>.json``: IGLUE
  publishes it for bn, de, id, ko, pt, ru, zh, but the copy in ``shared/data/iglue`` and the
  synthetic world leave that folder out and hold only ``few_shot/<lang>/dev.json`` (the same
  questions as the English dev file that selects the fine-tuned model). A root that has
  ``xGQA/annotations/zero_shot/`` must hold each tested language's file there: a missing one is an
  error naming it. A root without that folder tests on ``few_shot/<lang>/dev.json`` and every
  output says so (split ``dev``). No translate-test.
- MaRVL: ``marvl/zero_shot/annotations/marvl-<lang>.jsonl`` for id, sw, ta, tr, zh, translate-test
  ``annotations_machine-translate/marvl-<lang>_gmt.jsonl``: published. English is NLVR2, and IGLUE
  publishes only ``nlvr2/annotations/dev.jsonl`` (NLVR2's test sets are not in IGLUE): English
  tests on ``nlvr2/annotations/test.jsonl`` where one is provided (NLVR2's public test1, one JSON
  object a line), else on the dev file, labelled split ``dev``.
- xFlickr&CO: ``xFlickrCO/annotations/<lang>/test.jsonl`` for en and de, es, id, ja, ru, tr, zh;
  translate-test ``annotations_machine-translate/<lang>/test_gmt.jsonl``. All published.
- WIT: ``wit/annotations/test_<lang>.jsonl`` for en and ar, bg, da, el, et, id, ja, ko, tr, vi
  (images by URL: see ``mvlp_core.eval.wit_urls``). No translate-test.

A unit tested on a dev split says so in ``results.json`` (``"split": "dev"``), in each table
(a ``split`` column) and in the stage's manifest (``splits``, shown by ``mvlp status``). A test
file IGLUE publishes that is missing is an error naming the file and the fix, never a silent
switch to a dev file. English training sets are not in IGLUE's public copy: a fine-tune that
needs one fails with a message naming it (or set the task's fine-tune epochs to 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TASKS = ("xvnli", "xgqa", "marvl", "xflickrco", "wit")
SETTINGS = ("zero-shot", "few-shot", "translate-test")

IGLUE_LANGUAGES = {
    "xvnli": ("ar", "es", "fr", "ru"),
    "xgqa": ("bn", "de", "id", "ko", "pt", "ru", "zh"),
    "marvl": ("id", "sw", "ta", "tr", "zh"),
    "xflickrco": ("de", "es", "id", "ja", "ru", "tr", "zh"),
    "wit": ("ar", "bg", "da", "el", "et", "id", "ja", "ko", "tr", "vi"),
}
HEADLINE = {
    "xvnli": "accuracy",
    "xgqa": "accuracy",
    "marvl": "accuracy",
    "xflickrco": "ir_r1",
    "wit": "ir_r1",
}
FAMILY = {"xvnli": "nli", "xgqa": "qa", "marvl": "pair", "xflickrco": "retrieval", "wit": "retrieval"}
# the image folder kinds (spec iglue.image_roots) each task reads; MaRVL's English side is NLVR2
IMAGE_FOLDERS = {
    "xvnli": ("flickr30k",),
    "xgqa": ("gqa",),
    "marvl": ("nlvr2", "marvl"),
    "xflickrco": ("flickr30k", "coco"),
    "wit": ("wit",),
}
IGLUE_REPO = "github.com/e-bug/iglue, datasets/"


@dataclass(frozen=True)
class SplitFile:
    """The file a test unit reads and the split it holds: ``test``, or ``dev`` where IGLUE
    publishes no test file for the language (see the module docstring)."""

    path: Path
    split: str = "test"


def missing_fix(kind: str, task: str, lang: str = "en") -> str:
    """How to supply a missing ``kind`` file (test, dev, train) of ``task``, or do without it."""
    if kind == "train":
        return (
            f"IGLUE's public copy lacks the English training sets: put {task}'s there (from the "
            f"task's original release), or set iglue.finetune.tasks.{task}.epochs: 0 to evaluate "
            "without fine-tuning"
        )
    drop = f"drop {lang} from iglue.languages.{task}" if lang != "en" else f"drop {task} from iglue.tasks"
    if lang != "en" and lang not in IGLUE_LANGUAGES[task]:
        return f"IGLUE has no {task} set in {lang} (it has {', '.join(IGLUE_LANGUAGES[task])}): {drop}"
    return f"copy it there from IGLUE ({IGLUE_REPO}), or {drop}"


@dataclass(frozen=True)
class Layout:
    root: Path

    def test(self, task: str, lang: str, setting: str = "zero-shot") -> SplitFile | None:
        """The test file of ``lang`` in ``setting``; None where IGLUE has no such file (English
        translate-test, xGQA/WIT translate-test)."""
        if setting == "translate-test":
            return self._translate_test(task, lang)
        if task == "xvnli":
            return SplitFile(self.root / f"XVNLI/annotations/{lang}/test.jsonl")
        if task == "xgqa":
            return self._xgqa_test(lang)
        if task == "marvl":
            return self._marvl_test(lang)
        if task == "xflickrco":
            return SplitFile(self.root / f"xFlickrCO/annotations/{lang}/test.jsonl")
        if task == "wit":
            return SplitFile(self.root / f"wit/annotations/test_{lang}.jsonl")
        raise ValueError(f"unknown IGLUE task {task!r}; allowed: {', '.join(TASKS)}")

    def _translate_test(self, task: str, lang: str) -> SplitFile | None:
        if lang == "en":
            return None
        path = {
            "xvnli": self.root / f"XVNLI/annotations_machine-translate/{lang}/test.jsonl",
            "marvl": self.root / f"marvl/zero_shot/annotations_machine-translate/marvl-{lang}_gmt.jsonl",
            "xflickrco": self.root / f"xFlickrCO/annotations_machine-translate/{lang}/test_gmt.jsonl",
        }.get(task)
        return None if path is None else SplitFile(path)

    def _xgqa_test(self, lang: str) -> SplitFile:
        """IGLUE's zero-shot test file; a root without IGLUE's ``zero_shot/`` folder (the
        synthetic world, the trimmed shared copy) tests on the language's dev file, labelled."""
        if lang == "en":
            return SplitFile(self.root / "gqa/annotations/testdev_balanced_questions.json")
        zero_shot = self.root / "xGQA/annotations/zero_shot"
        if zero_shot.is_dir():
            return SplitFile(zero_shot / f"testdev_balanced_questions_{lang}.json")
        return SplitFile(self.root / f"xGQA/annotations/few_shot/{lang}/dev.json", "dev")

    def _marvl_test(self, lang: str) -> SplitFile:
        """MaRVL's file; English (NLVR2) has no test file in IGLUE: a provided one, else dev."""
        if lang != "en":
            return SplitFile(self.root / f"marvl/zero_shot/annotations/marvl-{lang}.jsonl")
        nlvr2_test = self.root / "nlvr2/annotations/test.jsonl"
        return SplitFile(nlvr2_test) if nlvr2_test.exists() else SplitFile(self.dev("marvl"), "dev")

    def train(self, task: str) -> Path:
        """English training data (zero-shot fine-tuning)."""
        return (
            self.root
            / {
                "xvnli": "XVNLI/annotations/en/train.jsonl",
                "xgqa": "gqa/annotations/train_balanced_questions.json",
                "marvl": "nlvr2/annotations/train.jsonl",
                "xflickrco": "flickr30k/annotations/train_ann.jsonl",
                "wit": "wit/annotations/train_en.jsonl",
            }[task]
        )

    def dev(self, task: str) -> Path:
        """English dev data (checkpoint and learning-rate selection)."""
        return {
            "xvnli": self.root / "XVNLI/annotations/en/dev.jsonl",
            "xgqa": self.root / "xGQA/annotations/few_shot/en/dev.json",
            "marvl": self.root / "nlvr2/annotations/dev.jsonl",
            "xflickrco": self.root / "flickr30k/annotations/valid_ann.jsonl",
            "wit": self.root / "wit/annotations/val_en.jsonl",
        }[task]

    def few_shot(self, task: str, lang: str, shots: int | str) -> Path | None:
        return {
            "xvnli": self.root / f"XVNLI/annotations/{lang}/train_{shots}.jsonl",
            "xgqa": self.root / f"xGQA/annotations/few_shot/{lang}/train_{shots}.json",
            "marvl": self.root / f"marvl/few_shot/annotations/marvl-{lang}_train{shots}.jsonl",
            "xflickrco": self.root / f"xFlickrCO/annotations/{lang}/train_{shots}.jsonl",
        }.get(task)
