"""The UniGen questioner prompts (CCQA3M): question–answer extraction from a caption.

Two styles (`qa.prompt`), each a completion prompt and the same as chat turns:

- `paper` (the default): UniGen's prompt as its paper gives it (§3.2, Figure 3), the instruction
  and its one worked example in the `<sentence> … <question> … <answer> …` pattern, for one pair a
  caption. The completion prompt ends with the next `<sentence>`, the caption and `<question>`.
- `fewshot`: a longer instruction, six CC3M-style worked examples in a `Q:`/`A:` format, and up to
  `n` pairs a caption (`qa.pairs_per_caption`).

Both want answers that are spans of the caption and no yes/no questions (UniGen's QA objective
predicts the answer from the caption's words). A completion prompt ends with the style's `cue`,
the start of the first question, so that a model continues in the format; the caller parses
`cue + generated text`, and generation stops at the style's next-sentence marker (`stop`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# CC3M-style captions (lower case, named entities replaced by hypernyms such as "actor").
EXAMPLES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "a dog runs along the beach at sunset",
        (
            ("What runs along the beach at sunset?", "a dog"),
            ("Where does the dog run?", "along the beach"),
            ("When does the dog run along the beach?", "at sunset"),
        ),
    ),
    (
        "actor attends the premiere of the film",
        (
            ("Who attends the premiere of the film?", "actor"),
            ("What does the actor attend?", "the premiere of the film"),
        ),
    ),
    (
        "two young women sitting on a wooden bench in the park",
        (
            ("How many young women are sitting on the bench?", "two"),
            ("What are the women sitting on?", "a wooden bench"),
            ("Where is the bench?", "in the park"),
        ),
    ),
    (
        "red and white lighthouse on the rocky coast",
        (
            ("What color is the lighthouse?", "red and white"),
            ("Where is the lighthouse?", "on the rocky coast"),
        ),
    ),
    (
        "a red circle above a blue square",
        (
            ("What is above the blue square?", "a red circle"),
            ("What color is the square?", "blue"),
        ),
    ),
    (
        "chef preparing a traditional dish in the kitchen",
        (
            ("Who is preparing a traditional dish?", "chef"),
            ("What is the chef preparing?", "a traditional dish"),
            ("Where is the chef?", "in the kitchen"),
        ),
    ),
)


def instruction(n: int = 1) -> str:
    what = "one question" if n == 1 else f"up to {n} questions"
    each = "The answer" if n == 1 else "Each answer"
    return (
        f"Write {what} about the sentence. {each} must be an important detail of the "
        "sentence (an object, a person, a colour, a number, a place or an action) copied exactly, "
        "word for word, from the sentence. Never ask a yes/no question. Write "
        f'{"the" if n == 1 else "each"} question on a line that starts with "Q:" and its answer '
        'on the next line, starting with "A:".'
    )


INSTRUCTION = instruction(1)
SENTENCE = "Sentence:"
CUE = "Q:"


def _one_line(caption: str) -> str:
    return re.sub(r"\s+", " ", caption).strip()


def _answer_block(pairs: tuple[tuple[str, str], ...], n: int) -> str:
    return "\n".join(f"Q: {q}\nA: {a}" for q, a in pairs[:n])


def few_shot(n: int = 1) -> str:
    blocks = [f"{SENTENCE} {c}\n{_answer_block(p, n)}" for c, p in EXAMPLES]
    return "\n\n".join([instruction(n), *blocks])


FEW_SHOT = few_shot(1)


def build_prompt(caption: str, n: int = 1) -> str:
    """The few-shot completion prompt for one caption; line breaks in it would break the format."""
    return f"{few_shot(n)}\n\n{SENTENCE} {_one_line(caption)}\n{CUE}"


def build_messages(caption: str, n: int = 1) -> list[dict[str, str]]:
    """The same prompt for chat models: the worked examples become earlier turns."""
    messages = [{"role": "system", "content": instruction(n)}]
    for c, pairs in EXAMPLES:
        messages += [
            {"role": "user", "content": f"{SENTENCE} {c}"},
            {"role": "assistant", "content": _answer_block(pairs, n)},
        ]
    messages.append({"role": "user", "content": f"{SENTENCE} {_one_line(caption)}"})
    return messages


# UniGen's prompt, verbatim (the paper's emphasis dropped), and its one worked example.
PAPER_INSTRUCTION = (
    "Extract accurate and important information to form a question-answer pair exactly from the "
    "sentence following the pattern, avoid using yes/no answers:"
)
PAPER_EXAMPLE = (
    "a worker sits on a bench in front of a group of young people.",
    "What is the worker in front of?",
    "young people.",
)
PAPER_SENTENCE, PAPER_QUESTION, PAPER_ANSWER = "<sentence>", "<question>", "<answer>"


def paper_prompt(caption: str) -> str:
    """UniGen's completion prompt for one caption, continued by the model after `<question>`."""
    s, q, a = PAPER_EXAMPLE
    return (
        f"{PAPER_INSTRUCTION}\n{PAPER_SENTENCE} {s} {PAPER_QUESTION} {q} {PAPER_ANSWER} {a} "
        f"{PAPER_SENTENCE} {_one_line(caption)} {PAPER_QUESTION}"
    )


def paper_messages(caption: str) -> list[dict[str, str]]:
    """UniGen's prompt for chat models: the instruction, its example as an earlier turn."""
    s, q, a = PAPER_EXAMPLE
    return [
        {"role": "system", "content": PAPER_INSTRUCTION},
        {"role": "user", "content": f"{PAPER_SENTENCE} {s}"},
        {"role": "assistant", "content": f"{PAPER_QUESTION} {q} {PAPER_ANSWER} {a}"},
        {"role": "user", "content": f"{PAPER_SENTENCE} {_one_line(caption)}"},
    ]


PromptStyle = Literal["paper", "fewshot"]


@dataclass(frozen=True)
class QAPrompt:
    """One style's prompts for a caption, what a completion prompt ends with (`cue`, put back in
    front of the output before parsing) and where generation stops (the next sentence's marker)."""

    style: PromptStyle = "paper"
    pairs: int = 1

    def __post_init__(self) -> None:
        if self.style == "paper" and self.pairs != 1:
            raise ValueError(f"the paper prompt asks for one pair a caption, not {self.pairs}: use fewshot")

    @property
    def cue(self) -> str:
        return PAPER_QUESTION if self.style == "paper" else CUE

    @property
    def stop(self) -> list[str]:
        if self.style == "paper":  # never at the output's start, where a chat model may echo
            return [f" {PAPER_SENTENCE}", f"\n{PAPER_SENTENCE}"]
        return [f"\n{SENTENCE}", f"\n\n{SENTENCE}"]

    def completion(self, caption: str) -> str:
        return paper_prompt(caption) if self.style == "paper" else build_prompt(caption, self.pairs)

    def messages(self, caption: str) -> list[dict[str, str]]:
        return paper_messages(caption) if self.style == "paper" else build_messages(caption, self.pairs)


PAPER = QAPrompt()  # UniGen's prompt, one pair a caption: the backends' default
