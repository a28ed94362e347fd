"""A corpus of realistic messy LLM outputs (tests/badinput/llm_outputs.json): each must
produce exactly its pairs and its reject reasons through the real parser and filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvlp_core.stages.qa.filters import REASONS, filter_pairs, looping, stem, unsupported_words
from mvlp_core.stages.qa.parser import OUTPUT_REASONS, QAPair, parse_output

CORPUS = json.loads((Path(__file__).parent / "llm_outputs.json").read_text())
MAX_CHARS = 1500


def outcome(case: dict) -> tuple[list[list[str]], list[str]]:
    parsed = parse_output(case["prefix"] + case["output"], MAX_CHARS)
    result = filter_pairs(case["caption"], parsed.pairs)
    reasons = parsed.problems + [r.reason for r in result.rejected]
    return [list(p) for p in result.kept], sorted(reasons)


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_corpus_case(case):
    assert outcome(case) == (case["kept"], case["reasons"])


def test_corpus_covers_every_reason():
    seen = {r for c in CORPUS for r in c["reasons"]}
    assert set(OUTPUT_REASONS) <= seen
    assert set(REASONS) - {"bad_question", "empty_answer"} <= seen | {"duplicate"}
    assert sum(bool(c["kept"]) for c in CORPUS) >= 10  # and most outputs still yield a pair


def test_overlong_output_is_cut_at_the_limit():
    text = "Q: What runs?\nA: a dog\n" + "x" * 5000
    parsed = parse_output(text, 100)
    assert parsed.problems == ["overlong_output"] and parsed.pairs == [QAPair("What runs?", "a dog")]
    assert parse_output("Q: What runs?\nA: a dog", 100).problems == []


def test_loop_cut_keeps_the_first_occurrence_only():
    text = "Q: What is red?\nA: a car\n" * 3 + "Q: What is blue?\nA: the sky"
    parsed = parse_output(text)
    assert parsed.pairs == [QAPair("What is red?", "a car")] and parsed.problems == ["repetition"]
    twice = "Q: What is red?\nA: a car\n" * 2  # twice is not yet a loop: the duplicate filter's job
    assert parse_output(twice).problems == [] and len(parse_output(twice).pairs) == 2


def test_stems_and_unsupported_words():
    assert stem("runs") == stem("running") == stem("run") == "run"
    assert stem("women") == stem("woman") and stem("babies") == "baby"
    caption = "a dog runs along the beach at sunset"
    assert unsupported_words(caption, "Where is the dog running?") == []
    assert unsupported_words(caption, "What color is the dog?") == []
    assert unsupported_words(caption, "What is the Man holding near the dog?") == ["Man", "holding"]


@pytest.mark.parametrize(
    "text, loops",
    [
        ("a dog a dog a dog", True),
        ("very very very big", True),
        ("a dog and a cat", False),
        ("the the", False),
        ("red and white and blue", False),
    ],
)
def test_looping(text, loops):
    assert looping(text) is loops
