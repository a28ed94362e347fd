"""Parse free model text into (question, answer) pairs without ever raising.

Both prompt styles' labels count: "Q:"/"A:" (fewshot) and "<question>"/"<answer>" (UniGen's
pattern, all on one line: each "<question>" starts a line here, so the loop and length checks see
one pair a line). Models drift from the format: numbered lists, "Question:/Answer:" labels,
markdown bold, closing tags, both labels on one line, chatter before or after, and continuing into
a new worked example. Only labelled text counts, with three fallbacks: an unlabelled line right
after a question is its answer, a question ("...?") right before an answer label on its line is
that answer's question, and in text with no labels at all a line ending in "?" pairs with the next
line. A question without an answer is dropped, and everything from the next example's marker on
("Sentence:" at a line's start; "<sentence>" after the first label, since a chat model may echo
the caption first) belongs to another sentence and is ignored.

`parse_output` also names what was wrong with the output as a whole (the stage counts these as
reject reasons): nothing written, no Q/A structure, a loop (a line that comes back three times or
more: parsing stops where it first repeats), or more text than allowed (cut at the limit).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple


class QAPair(NamedTuple):
    question: str
    answer: str


# A label: "<question>", "<answer>" anywhere; at the start of the text or after whitespace/markup
# "Q:", "Q1:", "Question 2:", "A:".
_LABEL = re.compile(
    r"<(question|answer)>\s*[:：]?|(?<![^\s*_(\[>#])(questions?|answers?|q|a)\s*\d{0,3}\s*[:：]",
    re.IGNORECASE,
)
_NEW_EXAMPLE = re.compile(r"^(sentence|caption|text|input|description)\s*\d{0,3}\s*[:：]", re.IGNORECASE)
_NEW_SENTENCE_TAG = re.compile(r"<sentence>", re.IGNORECASE)
_QUESTION_TAG = re.compile(r"[ \t]*(<question>)", re.IGNORECASE)
_LIST_MARK = re.compile(r"^\s*(?:[-*•>#]+|\(?\d{1,3}[.)]|\d{1,3}\s*[-–])\s*")
# and chat-template tokens, and the closing tags a model may add to UniGen's pattern
_EMPHASIS = re.compile(r"\*\*|__|`|<\|[^|<>]{0,40}\|>|</?s>|\[/?INST\]|(?i:</(?:question|answer|sentence)>)")
_EDGES = " \t\"'“”‘’*_`"


def _clean_line(line: str) -> str:
    return _LIST_MARK.sub("", _EMPHASIS.sub("", line)).strip()


def _segments(line: str) -> list[tuple[str, str]]:
    """(kind, text) for each label on the line, kind "q" or "a"; text up to the next label."""
    matches = list(_LABEL.finditer(line))
    out = []
    for m, nxt in zip(matches, [*matches[1:], None]):
        kind = "q" if (m.group(1) or m.group(2))[0].lower() == "q" else "a"
        out.append((kind, line[m.end() : nxt.start() if nxt else len(line)]))
    return out


def _clean_question(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(_EDGES)


def _clean_answer(text: str) -> str:
    """Answers are caption spans: surrounding quotes and a final full stop are not part of them."""
    return re.sub(r"\s+", " ", text).strip(_EDGES).rstrip(".;,").strip(_EDGES)


OUTPUT_REASONS = ("empty_output", "missing_tags", "repetition", "overlong_output")
LOOP_LINES = 3  # a line seen this often is a loop, not a coincidence


@dataclass
class Parsed:
    pairs: list[QAPair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # from OUTPUT_REASONS, in that order


def _labelled(lines: list[str]) -> tuple[list[QAPair], bool]:
    """Pairs from labelled lines, and whether any label was seen."""
    pairs: list[QAPair] = []
    question: str | None = None
    seen_label = False
    for line in lines:
        segments = _segments(line)
        seen_label |= bool(segments)
        if not segments:
            if question is not None and line:  # "Q: ...?" then an answer without its label
                pairs.append(QAPair(question, _clean_answer(line)))
                question = None
            continue
        for i, (kind, segment) in enumerate(segments):
            if kind == "q":
                question = _clean_question(segment)
            elif question is not None:
                pairs.append(QAPair(question, _clean_answer(segment)))
                question = None
            elif i == 0:  # "What ...? <answer> ...": the question without its label
                asked = _clean_question(line[: _LABEL.search(line).start()])
                if asked.endswith("?"):
                    pairs.append(QAPair(asked, _clean_answer(segment)))
    return pairs, seen_label


def _unlabelled(lines: list[str]) -> list[QAPair]:
    """No labels at all: a line ending in "?" and the next non-empty line."""
    pairs = []
    text = [line for line in lines if line]
    for line, nxt in zip(text, text[1:]):
        if line.endswith("?") and not nxt.endswith("?"):
            pairs.append(QAPair(_clean_question(line), _clean_answer(nxt)))
    return pairs


def _until_loop(lines: list[str]) -> tuple[list[str], bool]:
    counts = Counter(line.casefold() for line in lines if line)
    looping = {line for line, n in counts.items() if n >= LOOP_LINES}
    if not looping:
        return lines, False
    seen: set[str] = set()
    for i, line in enumerate(lines):
        key = line.casefold()
        if key in looping and key in seen:
            return lines[:i], True
        seen.add(key)
    return lines, True


def _before_next_sentence(text: str) -> str:
    """`text` up to the first "<sentence>" after its first label (one before it is an echo)."""
    first = _LABEL.search(text)
    nxt = _NEW_SENTENCE_TAG.search(text, first.end() if first else 0)
    return text[: nxt.start()] if nxt else text


def parse_output(text: str | None, max_chars: int | None = None) -> Parsed:
    """Pairs in order, and the problems of the output as a whole."""
    out = Parsed()
    text = text or ""
    if not text.strip():
        out.problems.append("empty_output")
        return out
    overlong = max_chars is not None and len(text) > max_chars
    text = _QUESTION_TAG.sub(r"\n\1", text)
    if overlong:  # the last line was cut mid-way: drop it
        text = text[:max_chars].rsplit("\n", 1)[0] if "\n" in text[:max_chars] else ""
    lines: list[str] = []
    for raw in _before_next_sentence(text).splitlines():
        line = _clean_line(raw)
        if _NEW_EXAMPLE.match(line):
            break
        lines.append(line)
    lines, looped = _until_loop(lines)
    out.pairs, labelled = _labelled(lines)
    if not labelled:
        out.pairs = _unlabelled(lines)
        if not out.pairs and not overlong:
            out.problems.append("missing_tags")
    if looped:
        out.problems.append("repetition")
    if overlong:
        out.problems.append("overlong_output")
    return out


def parse_pairs(text: str) -> list[QAPair]:
    """Every question followed by its answer, in order (see `parse_output`)."""
    return parse_output(text).pairs
