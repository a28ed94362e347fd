"""The UniGen questioner prompt (CCQA3M): few-shot question–answer extraction from a caption.

UniGen's QA objective needs answers that are spans of the caption, so the instruction and every
worked example copy the answer word for word from the sentence and never ask a yes/no question. The
prompt ends with `CUE`, the start of the first question, so that a model continues in the format;
the caller parses `CUE + generated text`.
"""

from __future__ import annotations

import re

INSTRUCTION = (
    "Write questions about the sentence. Each answer must be an important detail of the "
    "sentence (an object, a person, a colour, a number, a place or an action) copied exactly, "
    "word for word, from the sentence. Never ask a yes/no question. Write each question on a "
    'line that starts with "Q:" and its answer on the next line, starting with "A:".'
)

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

SENTENCE = "Sentence:"
CUE = "Q:"


def _block(caption: str, pairs: tuple[tuple[str, str], ...]) -> str:
    lines = [f"{SENTENCE} {caption}"]
    for question, answer in pairs:
        lines += [f"Q: {question}", f"A: {answer}"]
    return "\n".join(lines)


FEW_SHOT = "\n\n".join([INSTRUCTION, *(_block(c, p) for c, p in EXAMPLES)])


def build_prompt(caption: str) -> str:
    """The few-shot prompt for one caption; line breaks in the caption would break the format."""
    one_line = re.sub(r"\s+", " ", caption).strip()
    return f"{FEW_SHOT}\n\n{SENTENCE} {one_line}\n{CUE}"
