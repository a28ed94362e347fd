"""Parse free model text into (question, answer) pairs without ever raising.

Models drift from the few-shot format: numbered lists, "Question:/Answer:" labels, markdown bold,
both labels on one line, chatter before or after, and continuing into a new worked example. Only
labelled text counts; a question without an answer is dropped, and everything from the first
new-example marker on belongs to another sentence and is ignored.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class QAPair(NamedTuple):
    question: str
    answer: str


# A label at the start of the text or after whitespace/markup: "Q:", "Q1:", "Question 2:", "A:".
_LABEL = re.compile(r"(?<![^\s*_(\[>#])(questions?|answers?|q|a)\s*\d{0,3}\s*[:：]", re.IGNORECASE)
_NEW_EXAMPLE = re.compile(
    r"^(sentence|caption|text|input|description)\s*\d{0,3}\s*[:：]", re.IGNORECASE
)
_LIST_MARK = re.compile(r"^\s*(?:[-*•>#]+|\(?\d{1,3}[.)]|\d{1,3}\s*[-–])\s*")
_EMPHASIS = re.compile(r"\*\*|__|`")
_EDGES = " \t\"'“”‘’*_`"


def _clean_line(line: str) -> str:
    return _LIST_MARK.sub("", _EMPHASIS.sub("", line)).strip()


def _segments(line: str) -> list[tuple[str, str]]:
    """(kind, text) for each label on the line, kind "q" or "a"; text up to the next label."""
    matches = list(_LABEL.finditer(line))
    out = []
    for m, nxt in zip(matches, [*matches[1:], None]):
        kind = "q" if m.group(1)[0].lower() == "q" else "a"
        out.append((kind, line[m.end() : nxt.start() if nxt else len(line)]))
    return out


def _clean_question(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(_EDGES)


def _clean_answer(text: str) -> str:
    """Answers are caption spans: surrounding quotes and a final full stop are not part of them."""
    return re.sub(r"\s+", " ", text).strip(_EDGES).rstrip(".;,").strip(_EDGES)


def parse_pairs(text: str) -> list[QAPair]:
    """Every labelled question followed by a labelled answer, in order."""
    pairs: list[QAPair] = []
    question: str | None = None
    for raw in (text or "").splitlines():
        line = _clean_line(raw)
        if _NEW_EXAMPLE.match(line):
            break
        for kind, segment in _segments(line):
            if kind == "q":
                question = _clean_question(segment)
            elif question is not None:
                pairs.append(QAPair(question, _clean_answer(segment)))
                question = None
    return pairs
