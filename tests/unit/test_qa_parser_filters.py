"""The qa parser survives any model text; the filters keep only usable pairs and say why not."""

from __future__ import annotations

import random
import string

import pytest

from mvlp_core.stages.qa.filters import REASONS, filter_pairs, locate
from mvlp_core.stages.qa.parser import QAPair, parse_output, parse_pairs
from mvlp_core.stages.qa.prompt import CUE, EXAMPLES, FEW_SHOT, PAPER_EXAMPLE, build_prompt

PAIR = [QAPair("What color is the car?", "red")]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("   \n\n\t", []),
        ("the model rambles without any labels at all", []),
        ("Q: What color is the car?", []),  # a question without an answer
        ("A: red", []),  # an answer without a question
        ("Q: What color is the car?\nA: red", PAIR),
        ("Q: What color is the car?\r\nA: red\r\n", PAIR),
        ("1. Q: What color is the car?\n   A: red", PAIR),
        ("1) Question: What color is the car?\n2) Answer: red", PAIR),
        ("- Q: What color is the car?\n- A: red", PAIR),
        ("Question 1: What color is the car?\nAnswer 1: red", PAIR),
        ("Q1: What color is the car?\nA1: red", PAIR),
        ("question: What color is the car?\nanswer: red", PAIR),
        ("**Q:** What color is the car?\n**A:** red", PAIR),
        ("**Question:** What color is the car?  **Answer:** red", PAIR),
        ("Q: What color is the car? A: red", PAIR),
        ('Q: "What color is the car?"\nA: "red".', PAIR),
        ("Q：What color is the car?\nA：red", PAIR),
        ("Sure! Here:\nQ: What color is the car?\nA: red\nHope this helps <|end|> ###", PAIR),
        ("Q: What color is the car?\nA: red\n\nSentence: a cat\nQ: What is it?\nA: a cat", PAIR),
        ("Q: What color is the car?\nA: red\nCaption 2: a dog\nQ: What is it?\nA: a dog", PAIR),
        ("Q: Where is it?\nQ: What color is the car?\nA: red", PAIR),  # unanswered: dropped
        ("Q: What color is the car?\nA: red\nA: blue", PAIR),  # a second answer has no question
        ("Q:\nA: red", [QAPair("", "red")]),  # kept for the filters to reject with a reason
        ("Q: What color is the car?\nA:", [QAPair("What color is the car?", "")]),
        # UniGen's pattern: one line, the next <sentence> starts another caption's example
        ("<question> What color is the car? <answer> red.", PAIR),
        (
            "<question> What color is the car? <answer> red. <sentence> a cat <question> What? <answer> a cat",
            PAIR,
        ),
        (" What color is the car?\n<answer> red\n", []),  # the cue is put back by the caller
        ("<Question>What color is the car?<Answer>red", PAIR),
        ("<question> What color is the car? <answer>", [QAPair("What color is the car?", "")]),
        ("<sentence> a car <question> What color is the car? <answer> red", PAIR),  # a chat model's echo
        ("<sentence> a car", []),
        ("<question> What color is the car? </question> <answer> red. </answer>", PAIR),
        ("<question>: What color is the car? <answer>: red", PAIR),
        ("What color is the car? <answer> red.", PAIR),  # chat mode: no cue to put back
        ("What color is the car? A: red", PAIR),
        ("The car. <answer> red", []),  # no question asked before the answer
        (
            "<question> What color is the car? <answer> red <question> What is red? <answer> the car",
            [*PAIR, QAPair("What is red?", "the car")],
        ),
    ],
)
def test_parse_cases(text, expected):
    assert parse_pairs(text) == expected


def test_one_line_pattern_gets_the_loop_and_length_checks():
    """UniGen's pattern writes every pair on one line: a loop there is still a loop, and an output
    cut at the length limit keeps its whole pairs."""
    looped = parse_output("<question> What color is the car? <answer> red " * 5)
    assert looped.pairs == PAIR and looped.problems == ["repetition"]
    long = "<question> What color is the car? <answer> red <question> What is it? <answer> " + "a car " * 100
    cut = parse_output(long, max_chars=120)
    assert cut.pairs == PAIR and cut.problems == ["overlong_output"]


def test_parse_several_pairs_in_order():
    text = " What is above the blue square?\nA: a red circle\nQ: What color is the square?\nA: blue"
    assert parse_pairs(CUE + text) == [
        QAPair("What is above the blue square?", "a red circle"),
        QAPair("What color is the square?", "blue"),
    ]


FRAGMENTS = [
    "Q:",
    "A:",
    "Question:",
    "Answer:",
    "q1:",
    "**",
    "1.",
    "- ",
    "\n",
    "\n\n",
    "\r",
    "?",
    ".",
    '"',
    "Sentence:",
    "Caption:",
    "：",
    "<|endoftext|>",
    "é",
    "字",
    "\x00",
    "\t",
    ":",
    "A",
    "Q",
    " ",
    "What",
    "is",
    "the",
    "red",
    "car",
    "yes",
    "no",
]


def random_text(rng: random.Random) -> str:
    parts = [rng.choice(FRAGMENTS) for _ in range(rng.randrange(0, 40))]
    parts += ["".join(rng.choices(string.printable, k=rng.randrange(0, 10)))]
    rng.shuffle(parts)
    return "".join(parts)


def test_parse_never_raises_on_garbage():
    rng = random.Random(0)
    for _ in range(3000):
        pairs = parse_pairs(random_text(rng))
        for pair in pairs:
            assert isinstance(pair, QAPair)
            assert isinstance(pair.question, str) and isinstance(pair.answer, str)
            assert "\n" not in pair.question and "\n" not in pair.answer
        assert len(filter_pairs("a red car", pairs).kept) <= len(pairs)


WORDS = ["what", "is", "the", "red", "car", "dog", "beach", "where", "two", "on", "color", "it's"]


def test_well_formed_output_round_trips_in_any_label_style():
    rng = random.Random(1)
    styles = [("Q: ", "A: "), ("Question: ", "Answer: "), ("**Q:** ", "**A:** "), ("1. Q: ", "A: ")]
    styles.append(("<question> ", " <answer> "))  # UniGen's pattern
    endings = [
        "",
        "\n",
        "\nQ: dangling?",
        "\nSentence: x\nQ: y?\nA: z",
        " <sentence> x <question> y? <answer> z",
    ]
    for _ in range(500):
        pairs = [
            QAPair(
                " ".join(rng.choices(WORDS, k=rng.randrange(1, 8))) + "?",
                " ".join(rng.choices(WORDS, k=rng.randrange(1, 4))),
            )
            for _ in range(rng.randrange(0, 5))
        ]
        q_label, a_label = rng.choice(styles)
        text = "\n".join(f"{q_label}{q}\n{a_label}{a}" for q, a in pairs)
        ending = rng.choice(endings)
        if not pairs and ending.startswith(" <sentence>"):
            ending = ""  # alone, it reads as a chat model's echo of its caption and that caption's pair
        assert parse_pairs(text + ending) == pairs


CAPTION = "A Red Car parked on the street next to two yellow taxis"


REJECTED = {  # reason: the (question, answer) pairs the filters reject for it
    "empty_answer": [("What color is the car?", ""), ("What color is the car?", " ... ")],
    "answer_not_in_caption": [
        ("What color is the car?", "blue"),
        ("What is the car?", "ed"),  # inside "Red", not a word
        ("What is parked?", "red car parked in"),
    ],
    "yes_no_answer": [("Is the car red?", a) for a in ("yes", "Yes.", "TRUE", "Yes, it is", "yep")]
    + [("Is the car blue?", a) for a in ("no", "False", "no it isn't")],
    "bad_question": [
        ("", "red"),
        ("?", "red"),
        ("What color is the car", "red"),
        ("Where is the red car parked?", "red car"),  # gives it away
    ],
}


@pytest.mark.parametrize(
    "pair, reason", [(QAPair(q, a), reason) for reason, pairs in REJECTED.items() for q, a in pairs]
)
def test_rejection_reasons(pair, reason):
    result = filter_pairs(CAPTION, [pair])
    assert result.kept == [] and [r.reason for r in result.rejected] == [reason]
    assert reason in REASONS


def test_answers_keep_the_captions_casing_and_spacing():
    pairs = [QAPair("What is parked on the street?", "red   CAR"), QAPair("How many taxis?", "two")]
    assert filter_pairs(CAPTION, pairs).kept == [
        QAPair("What is parked on the street?", "Red Car"),
        QAPair("How many taxis?", "two"),
    ]


def test_no_is_fine_inside_a_longer_answer_that_the_caption_holds():
    caption = "a no smoking sign on a wall"
    result = filter_pairs(caption, [QAPair("What is on the wall?", "a no smoking sign")])
    assert result.kept == [QAPair("What is on the wall?", "a no smoking sign")]


def test_duplicates_by_normalised_question():
    pairs = [
        QAPair("What color is the car?", "red"),
        QAPair("what color is  the car ?", "Red"),  # same question, same answer
        QAPair("What color is the car?", "yellow"),  # same question: the first answer wins
        QAPair("What color are the taxis?", "yellow"),
    ]
    result = filter_pairs(CAPTION, pairs)
    assert result.kept == [
        QAPair("What color is the car?", "Red"),
        QAPair("What color are the taxis?", "yellow"),
    ]
    assert [r.reason for r in result.rejected] == ["duplicate", "duplicate"]


def test_kept_pairs_always_satisfy_the_filters():
    rng = random.Random(2)
    words = CAPTION.split() + ["yes", "no", "blue", "", "?"]
    for _ in range(2000):
        pairs = [
            QAPair(
                " ".join(rng.choices(words, k=rng.randrange(0, 6))) + rng.choice("? "),
                " ".join(rng.choices(words, k=rng.randrange(0, 4))),
            )
            for _ in range(rng.randrange(0, 6))
        ]
        result = filter_pairs(CAPTION, pairs)
        assert len(result.kept) + len(result.rejected) == len(pairs)
        questions = [q.casefold() for q, _ in result.kept]
        assert len(set(questions)) == len(questions)
        for question, answer in result.kept:
            assert answer in CAPTION and locate(CAPTION, answer) == answer
            assert question.endswith("?") and answer.lower() not in ("yes", "no")
        assert all(r.reason in REASONS for r in result.rejected)


def test_few_shot_examples_obey_the_rules_they_teach():
    for caption, pairs in EXAMPLES:
        expected = [QAPair(*p) for p in pairs]
        assert filter_pairs(caption, expected).kept == expected


def test_paper_example_obeys_the_rules_it_teaches():
    sentence, question, answer = PAPER_EXAMPLE
    parsed = parse_pairs(f"<question> {question} <answer> {answer}")
    assert filter_pairs(sentence, parsed).kept == parsed == [QAPair(question, "young people")]


def test_prompt_ends_with_the_cue_and_keeps_the_caption_on_one_line():
    prompt = build_prompt("a dog\non the\tbeach ")
    assert prompt.startswith(FEW_SHOT) and prompt.endswith("\nSentence: a dog on the beach\nQ:")
    assert "yes/no" in FEW_SHOT and len(EXAMPLES) >= 4
