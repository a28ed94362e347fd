"""XVNLI: ``XVNLI/annotations/<lang>/{test,train_<shots>}.jsonl`` (SNLI-VE format).

Each row: gold_label, sentence1 (the Flickr30K caption, not shown to the model), sentence2 (the
hypothesis), captionID, pairID, Flikr30kID (sic). The premise is the image ``<Flikr30kID>.jpg``.
A ``-`` gold label (no annotator majority) is kept with ``label=None``: VOLTA keeps these rows
with an all-zero target, so they count in the accuracy denominator and can never be right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvlp_core.eval.io import AnnotationError, read_jsonl, require

LABELS = ("entailment", "neutral", "contradiction")
FIELDS = ("gold_label", "sentence1", "sentence2", "pairID", "Flikr30kID")


@dataclass(frozen=True)
class NLIItem:
    id: str  # pairID
    image: str  # Flickr30K id (file <id>.jpg)
    hypothesis: str
    premise_caption: str
    label: str | None  # None for "-"


def load(path: str | Path) -> list[NLIItem]:
    items = []
    for n, row in enumerate(read_jsonl(path), 1):
        require(row, FIELDS, f"{path}:{n}")
        gold = row["gold_label"]
        if gold != "-" and gold not in LABELS:
            raise AnnotationError(f"{path}:{n}: gold_label {gold!r}; allowed: {', '.join(LABELS)}, -")
        items.append(
            NLIItem(
                str(row["pairID"]),
                str(row["Flikr30kID"]),
                row["sentence2"],
                row["sentence1"],
                None if gold == "-" else gold,
            )
        )
    return items
