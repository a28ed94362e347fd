"""Keep only question–answer pairs that UniGen's QA objective can use, and say why others go.

The answer must be a span of the caption (matched case-insensitively on word boundaries, stored in
the caption's own casing), never yes/no, not the question again, not a loop ("a dog a dog a dog"),
and not given away by the question; the question must be a question about the caption: every
content word in it must come from the caption (up to inflection), so an entity the model invented
("What is the man holding?" about a caption without a man) rejects the pair. Within one caption a
question is kept once: the first answer wins.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from mvlp_core.stages.qa.lexicon import AUX, CLOSED, COLOURS, CONJ, DETS, NUMBERS, PREPS, SIZES
from mvlp_core.stages.qa.parser import QAPair

REASONS = (
    "empty_answer",
    "bad_question",
    "question_as_answer",
    "yes_no_answer",
    "repetition",
    "answer_not_in_caption",
    "hallucinated_entity",
    "duplicate",
)
# Words a question may use without the caption holding them: closed classes and the vocabulary
# of asking (colour and size words are answers, never evidence of an invented entity).
FUNCTION_WORDS = (
    DETS
    | PREPS
    | AUX
    | CLOSED
    | CONJ
    | NUMBERS
    | COLOURS
    | SIZES
    | frozenset(
        "do does did doing done can could would should will may might must shall am "
        "color colour colors colours size shape kind type sort many much number name "
        "happening happen happens place location time thing things object objects something "
        "someone somebody anything anyone person people picture image photo photograph scene "
        "shown seen pictured depicted visible located described mentioned sentence caption "
        "left right front top middle side part next not kept".split()
    )
)
_IRREGULAR = {
    "men": "man",
    "women": "woman",
    "children": "child",
    "people": "person",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "geese": "goose",
}
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
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


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A crude stem, enough to match "run"/"runs"/"running" and "woman"/"women"."""
    w = _IRREGULAR.get(word.casefold(), word.casefold()).replace("’", "'")
    w = w.removesuffix("'s")
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)] + ("y" if suffix == "ies" else "")
            if suffix in ("ing", "ed") and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]  # running -> run, but rolling, passed stay
            return w
    return w


def unsupported_words(caption: str, question: str) -> list[str]:
    """Content words of the question that the caption does not hold in any inflection."""
    have = {stem(w) for w in _WORD.findall(caption)}
    missing = []
    for word in _WORD.findall(question):
        low = word.casefold()
        if low in FUNCTION_WORDS or len(low) < 2:
            continue
        s = stem(low)
        if s in have or any(
            len(s) >= 3 and (h.startswith(s) or s.startswith(h)) and len(h) >= 3 for h in have
        ):
            continue
        missing.append(word)
    return missing


def looping(text: str, times: int = 3) -> bool:
    """A word n-gram (n <= 4) repeated `times` times in a row: the model is looping."""
    words = normalise(text).split()
    for n in range(1, 5):
        for i in range(len(words) - n * times + 1):
            gram = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == gram for k in range(1, times)):
                return True
    return False


def check(caption: str, pair: QAPair) -> QAPair | Rejected:
    """The pair with its answer in the caption's casing, or why it cannot be used."""
    question, answer = pair.question.strip(), pair.answer.strip()
    if not normalise(answer):
        return Rejected(pair, "empty_answer")
    if not re.search(r"\w", question) or not question.endswith("?"):
        return Rejected(pair, "bad_question", "not a question ending in '?'")
    if normalise(answer) == normalise(question) or answer.endswith("?"):
        return Rejected(pair, "question_as_answer", answer[:40])
    if _YES_NO_ANSWER.fullmatch(normalise(answer)):
        return Rejected(pair, "yes_no_answer", answer[:40])
    if looping(question) or looping(answer):
        return Rejected(pair, "repetition", (answer if looping(answer) else question)[:40])
    span = locate(caption, answer)
    if span is None:
        return Rejected(pair, "answer_not_in_caption", answer[:40])
    if _words_pattern(span).search(question):
        return Rejected(pair, "bad_question", "the question contains the answer")
    missing = unsupported_words(caption, question)
    if missing:
        return Rejected(pair, "hallucinated_entity", ", ".join(missing)[:40])
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
