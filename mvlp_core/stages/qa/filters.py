"""Keep only question–answer pairs that UniGen's QA objective can use, and say why others go.

The answer must be a span of the caption (matched case-insensitively on word boundaries, stored in
the caption's own casing), never yes/no, and not given away by the question; the question must be a
question. Within one caption a question is kept once: the first answer wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from mvlp_core.stages.qa.parser import QAPair

REASONS = ("empty_answer", "bad_question", "yes_no_answer", "answer_not_in_caption", "duplicate")
_YES_NO = r"yes|no|yeah|yep|yup|nope|nah|true|false"
_PRONOUN = r"it|they|there|he|she|this|that|these|those|i|we|you"
_YES_NO_ANSWER = re.compile(
    rf"(?:{_YES_NO})(?:\s*[,;!.].*|\s+(?:{_PRONOUN})\b.*)?", re.IGNORECASE | re.DOTALL
)


@dataclass(frozen=True)
class Rejected:
    pair: QAPair
    reason: str
    detail: str = ""


@dataclass
class Filtered:
    kept: list[QAPair] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def normalise(text: str) -> str:
    """Case, spacing and edge punctuation do not make two questions or answers different."""
    return re.sub(r"\s+", " ", text).casefold().strip(" \t\"'.,;:!?")


def _words_pattern(text: str) -> re.Pattern[str]:
    words = text.split()
    return re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE)


def locate(caption: str, answer: str) -> str | None:
    """The caption's own text of `answer` if it occurs there as whole words, else None."""
    if not answer.split():
        return None
    m = _words_pattern(answer).search(caption)
    return m.group(0) if m else None


def check(caption: str, pair: QAPair) -> QAPair | Rejected:
    """The pair with its answer in the caption's casing, or why it cannot be used."""
    question, answer = pair.question.strip(), pair.answer.strip()
    if not normalise(answer):
        return Rejected(pair, "empty_answer")
    if not re.search(r"\w", question) or not question.endswith("?"):
        return Rejected(pair, "bad_question", "not a question ending in '?'")
    if _YES_NO_ANSWER.fullmatch(normalise(answer)):
        return Rejected(pair, "yes_no_answer", answer[:40])
    span = locate(caption, answer)
    if span is None:
        return Rejected(pair, "answer_not_in_caption", answer[:40])
    if _words_pattern(span).search(question):
        return Rejected(pair, "bad_question", "the question contains the answer")
    return QAPair(question, span)


def filter_pairs(caption: str, pairs: Iterable[QAPair]) -> Filtered:
    """Check every pair in order; the output keeps the input order of the surviving pairs."""
    out = Filtered()
    seen: set[str] = set()
    for pair in pairs:
        result = check(caption, pair)
        if isinstance(result, Rejected):
            out.rejected.append(result)
        elif normalise(result.question) in seen:
            out.rejected.append(Rejected(pair, "duplicate", result.question[:40]))
        else:
            seen.add(normalise(result.question))
            out.kept.append(result)
    return out
