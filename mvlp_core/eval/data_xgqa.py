"""xGQA / GQA in the balanced-questions format: a dict keyed by questionId, each value holding
``question``, ``imageId`` (image ``<imageId>.jpg``), ``answer`` and ``fullAnswer`` (English in every
language, as in xGQA). The LXMERT form (``testdev.json``: a list of {img_id, label, question_id,
sent}) is read too; its answer is the label with the highest score."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvlp_core.eval.io import AnnotationError, read_json, require


@dataclass(frozen=True)
class QAItem:
    id: str  # questionId
    image: str  # imageId
    question: str
    answer: str


def load(path: str | Path) -> list[QAItem]:
    data = read_json(path)
    if isinstance(data, dict):
        items = []
        for qid, q in data.items():
            require(q, ("question", "imageId", "answer"), f"{path}: question {qid}")
            items.append(QAItem(str(qid), str(q["imageId"]), q["question"], q["answer"]))
        return items
    if isinstance(data, list):
        items = []
        for n, q in enumerate(data):
            require(q, ("img_id", "label", "question_id", "sent"), f"{path}: entry {n}")
            answer = max(q["label"], key=q["label"].get) if q["label"] else ""
            items.append(QAItem(str(q["question_id"]), str(q["img_id"]), q["sent"], answer))
        return items
    raise AnnotationError(f"{path}: expected a dict keyed by questionId or an LXMERT list")


def load_answer_vocab(path: str | Path) -> list[str]:
    """``trainval_label2ans.json`` (a list) or ``trainval_ans2label.json`` (a dict answer->index)."""
    data = read_json(path)
    if isinstance(data, list):
        return [str(a) for a in data]
    if isinstance(data, dict):
        return [a for a, _ in sorted(data.items(), key=lambda kv: kv[1])]
    raise AnnotationError(f"{path}: expected a list of answers or a dict answer -> index")
