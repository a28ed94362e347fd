"""The five IGLUE tasks: languages, metric, and where each setting's files live under a root
laid out like IGLUE's ``datasets/`` folder (the real one, or the synthetic world's ``iglue/``).

Which test split each (task, language) has, checked against IGLUE's published ``datasets/``
(github.com/e-bug/iglue) and the copy in ``shared/data/iglue``:

- XVNLI: ``XVNLI/annotations/<lang>/test.jsonl`` for en, ar, es, fr, ru; translate-test
  ``annotations_machine-translate/<lang>/test.jsonl`` for ar, es, fr, ru. All published.
- xGQA: ``xGQA/annotations/few_shot/<lang>/test.json`` for en and bn, de, id, ko, pt, ru, zh, in
  the zero-shot and the few-shot setting alike, as IGLUE's evaluation scripts read it
  (``experiments/*/*/xgqa/test.<lang>.dtu.sh``): GQA's testdev less the few-shot train and dev
  questions, so it shares no question with ``few_shot/en/dev.json``, which selects the fine-tuned
  model. (``zero_shot/testdev_balanced_questions_<lang>.json`` is xGQA's own full testdev, which
  IGLUE does not score on.) Translate-test: ``annotations_machine-translate/few_shot/<lang>/
  test.json``.
- MaRVL: ``marvl/zero_shot/annotations/marvl-<lang>.jsonl`` for id, sw, ta, tr, zh, translate-test
  ``annotations_machine-translate/marvl-<lang>_gmt.jsonl``. English is NLVR2's
  ``nlvr2/annotations/test.jsonl`` (IGLUE's copy of NLVR2's public test1).
- xFlickr&CO: ``xFlickrCO/annotations/<lang>/test.jsonl`` for en and de, es, id, ja, ru, tr, zh;
  translate-test ``annotations_machine-translate/<lang>/test_gmt.jsonl``. All published.
- WIT: ``wit/annotations/test_<lang>.jsonl`` for en and ar, bg, da, el, et, id, ja, ko, tr, vi
  (images by URL: see ``mvlp_core.eval.wit_urls``); translate-test
  ``annotations_machine-translate/test_<lang>_gmt.jsonl``.

Every test file above is published: a missing one is an error naming the file and the fix. A
trimmed copy of IGLUE (``shared/data/iglue`` lacks the xGQA and NLVR2 test files) can opt into
``iglue.dev_when_no_test``: those units then score the language's dev file, and say so in
``results.json`` (``"split": "dev"``), in each table (a ``split`` column) and in the stage's
manifest (``splits``, shown by ``mvlp status``). A task's English training set missing (IGLUE
ships them zipped: ``train.jsonl.zip``) fails the fine-tune with a message naming it (or set the
task's fine-tune epochs to 0).
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
# IGLUE's few-shot scripts (experiments/few_shot/<model>/<task>/<lang>/<shots>/train.dtu.sh): the
# optimiser step's batch and the micro-batches it is split into, by task and number of shots
FEW_SHOT_BATCH: dict[str, dict[str, tuple[int, int]]] = {
    "xvnli": {"1": (2, 1), "5": (16, 1), "10": (32, 1), "20": (64, 1), "25": (64, 1), "48": (64, 1)},
    "xgqa": {"1": (8, 1), "5": (16, 1), "10": (32, 1), "20": (64, 1), "25": (64, 1), "48": (64, 1)},
    "marvl": {"1": (2, 1), "2": (4, 1), "4": (8, 1), "10": (16, 1), "10x2": (32, 1)},
    "xflickrco": {"1": (1, 1), "5": (2, 1), "10": (4, 1), "25": (8, 1), "50": (16, 1), "100": (32, 2)},
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
    """The file a test unit reads and the split it holds: ``test``, or ``dev`` where the root
    lacks the test file and ``iglue.dev_when_no_test`` allows its dev file (module docstring)."""

    path: Path
    split: str = "test"


def missing_fix(kind: str, task: str, lang: str = "en") -> str:
    """How to supply a missing ``kind`` file (test, dev, train) of ``task``, or do without it."""
    if kind == "train":
        return (
            f"IGLUE's datasets/ folder ships the English training sets zipped (e.g. XVNLI/annotations/"
            f"en/train.jsonl.zip) and trimmed copies leave them out: put {task}'s at this path, or set "
            f"iglue.finetune.tasks.{task}.epochs: 0 to evaluate "
            "without fine-tuning"
        )
    drop = f"drop {lang} from iglue.languages.{task}" if lang != "en" else f"drop {task} from iglue.tasks"
    if lang != "en" and lang not in IGLUE_LANGUAGES[task]:
        return f"IGLUE has no {task} set in {lang} (it has {', '.join(IGLUE_LANGUAGES[task])}): {drop}"
    return f"copy it there from IGLUE ({IGLUE_REPO}), or {drop}"


@dataclass(frozen=True)
class Layout:
    root: Path
    dev_when_no_test: bool = False  # iglue.dev_when_no_test

    def test(self, task: str, lang: str, setting: str = "zero-shot") -> SplitFile | None:
        """The test file of ``lang`` in ``setting``; None where IGLUE has no such file (English
        translate-test)."""
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
        return SplitFile(
            {
                "xvnli": self.root / f"XVNLI/annotations_machine-translate/{lang}/test.jsonl",
                "xgqa": self.root / f"xGQA/annotations_machine-translate/few_shot/{lang}/test.json",
                "marvl": self.root / f"marvl/zero_shot/annotations_machine-translate/marvl-{lang}_gmt.jsonl",
                "xflickrco": self.root / f"xFlickrCO/annotations_machine-translate/{lang}/test_gmt.jsonl",
                "wit": self.root / f"wit/annotations_machine-translate/test_{lang}_gmt.jsonl",
            }[task]
        )

    def _or_dev(self, test: Path, dev: Path) -> SplitFile:
        """``test``, or ``dev`` labelled where ``test`` is missing and the spec allows it."""
        if self.dev_when_no_test and not test.exists():
            return SplitFile(dev, "dev")
        return SplitFile(test)

    def _xgqa_test(self, lang: str) -> SplitFile:
        few_shot = self.root / f"xGQA/annotations/few_shot/{lang}"
        return self._or_dev(few_shot / "test.json", few_shot / "dev.json")

    def _marvl_test(self, lang: str) -> SplitFile:
        if lang != "en":
            return SplitFile(self.root / f"marvl/zero_shot/annotations/marvl-{lang}.jsonl")
        return self._or_dev(self.root / "nlvr2/annotations/test.jsonl", self.dev("marvl"))

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

    def few_shot_dev(self, task: str, lang: str) -> Path | None:
        """The dev set a few-shot unit selects on where it is not English's: xGQA's (IGLUE's
        few-shot scripts: ``--val_split dev_<lang>``); None for the tasks that select on English."""
        return self.root / f"xGQA/annotations/few_shot/{lang}/dev.json" if task == "xgqa" else None

    def few_shot(self, task: str, lang: str, shots: int | str) -> Path | None:
        return {
            "xvnli": self.root / f"XVNLI/annotations/{lang}/train_{shots}.jsonl",
            "xgqa": self.root / f"xGQA/annotations/few_shot/{lang}/train_{shots}.json",
            "marvl": self.root / f"marvl/few_shot/annotations/marvl-{lang}_train{shots}.jsonl",
            "xflickrco": self.root / f"xFlickrCO/annotations/{lang}/train_{shots}.jsonl",
        }.get(task)
