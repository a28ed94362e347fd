"""The five IGLUE tasks: languages, metric, and where each setting's files live under a root
laid out like IGLUE's ``datasets/`` folder (the real one, or the synthetic world's ``iglue/``).

Files the public copy lacks (English training sets, xGQA's official test split) are looked up all
the same; a unit whose file is missing fails with a message naming the file.
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


@dataclass(frozen=True)
class Layout:
    root: Path

    def _pick(self, *candidates: str) -> Path:
        """The first candidate that exists, else the first (so the error names the canonical file)."""
        for rel in candidates:
            if (self.root / rel).exists():
                return self.root / rel
        return self.root / candidates[0]

    def test(self, task: str, lang: str, setting: str = "zero-shot") -> Path | None:
        """The test file of ``lang`` in ``setting``; None where IGLUE has no such file (English
        translate-test, xGQA/WIT translate-test)."""
        if setting == "translate-test":
            if lang == "en":
                return None
            return {
                "xvnli": self.root / f"XVNLI/annotations_machine-translate/{lang}/test.jsonl",
                "marvl": self.root / f"marvl/zero_shot/annotations_machine-translate/marvl-{lang}_gmt.jsonl",
                "xflickrco": self.root / f"xFlickrCO/annotations_machine-translate/{lang}/test_gmt.jsonl",
            }.get(task)
        if task == "xvnli":
            return self.root / f"XVNLI/annotations/{lang}/test.jsonl"
        if task == "xgqa":
            if lang == "en":
                return self.root / "gqa/annotations/testdev_balanced_questions.json"
            return self._pick(
                f"xGQA/annotations/zero_shot/testdev_balanced_questions_{lang}.json",
                f"xGQA/annotations/few_shot/{lang}/dev.json",
            )
        if task == "marvl":
            if lang == "en":
                return self._pick("nlvr2/annotations/test.jsonl", "nlvr2/annotations/dev.jsonl")
            return self.root / f"marvl/zero_shot/annotations/marvl-{lang}.jsonl"
        if task == "xflickrco":
            return self.root / f"xFlickrCO/annotations/{lang}/test.jsonl"
        if task == "wit":
            return self.root / f"wit/annotations/test_{lang}.jsonl"
        raise ValueError(f"unknown IGLUE task {task!r}; allowed: {', '.join(TASKS)}")

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
