"""The UniGen questioner prompt (CCQA3M): few-shot question–answer extraction from a caption.

UniGen's QA objective needs answers that are spans of the caption, so the instruction and every
worked example copy the answer word for word from the sentence and never ask a yes/no question. The
prompt ends with `CUE`, the start of the first question, so that a model continues in the format;
the caller parses `CUE + generated text`. Chat models get the same examples as conversation turns.

UniGen asked its LLM for one QA pair per CC3M caption, so one pair is the default; `n` > 1 asks for
up to n pairs, and each worked example then shows up to n of its pairs.
"""

from __future__ import annotations

import re

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
