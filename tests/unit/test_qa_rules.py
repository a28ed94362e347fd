"""The rules questioner: valid pairs for every synthetic caption and common CC3M caption shapes."""

from __future__ import annotations

import itertools
import random

import pytest

from mvlp_core.stages.qa.filters import filter_pairs
from mvlp_core.stages.qa.parser import QAPair
from mvlp_core.stages.qa.rules import RulesQuestioner, lemma, questions, third_person

# The synthetic world's English grammar (mvlp_core/synth/grammar.py), enumerated.
COLOURS = ("red", "green", "blue", "yellow", "black", "purple")
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
PLURALS = {s: s + ("es" if s == "cross" else "s") for s in SHAPES}
RELATIONS = ("above", "below", "to the left of", "to the right of")


def synthetic_captions() -> list[str]:
    single = [f"a {size}{c} {s}" for size in ("", "small ", "big ") for c in COLOURS for s in SHAPES]
    count = [f"{n} {c} {PLURALS[s]}" for n in ("two", "three") for c in COLOURS for s in SHAPES]
    relation = [
        f"a {c1} {s1} {rel} a {c2} {s2}"
        for c1, c2, rel in itertools.product(COLOURS, COLOURS, RELATIONS)
        for s1, s2 in itertools.permutations(SHAPES, 2)
    ]
    return single + count + relation


def kept(caption: str) -> list[tuple[str, str]]:
    return [tuple(p) for p in filter_pairs(caption, questions(caption)).kept]


def test_sample_captions():
    assert kept("a red circle above a blue square") == [
        ("What is above the blue square?", "a red circle"),
        ("Where is the red circle?", "above a blue square"),
        ("What color is the circle?", "red"),
        ("What color is the square?", "blue"),
    ]
    assert kept("a small green triangle") == [
        ("What color is the small triangle?", "green"),
        ("What size is the green triangle?", "small"),
    ]
    assert kept("two yellow stars on a white background") == [
        ("What is on the white background?", "two yellow stars"),
        ("How many yellow stars are there?", "two"),
        ("Where are the yellow stars?", "on a white background"),
        ("What color are the stars?", "yellow"),
        ("What color is the background?", "white"),
    ]
    assert ("What is to the right of the black diamond?", "a big purple cross") in kept(
        "a big purple cross to the right of a black diamond"
    )


def test_every_synthetic_caption_gets_valid_pairs():
    captions = synthetic_captions()
    assert len(captions) == 108 + 72 + 36 * 4 * 30
    for caption in captions:
        result = filter_pairs(caption, questions(caption))
        assert result.kept, caption
        assert not result.rejected, (caption, result.rejected)


@pytest.mark.parametrize(
    "caption, expected",
    [
        (
            "actor attends the premiere of the film",
            [
                ("Who attends the premiere of the film?", "actor"),
                ("What does the actor attend?", "the premiere of the film"),
            ],
        ),
        (
            "a dog runs on the beach",
            [
                ("What runs on the beach?", "a dog"),
                ("Where does the dog run?", "on the beach"),
            ],
        ),
        (
            "person walking along the river in the city",
            [
                ("Where is the person walking?", "along the river"),
                ("Where is the river?", "in the city"),
                ("Who is walking along the river in the city?", "person"),
            ],
        ),
        (
            "a red car parked on the street",
            [
                ("What is parked on the street?", "a red car"),
                ("Where is the red car parked?", "on the street"),
                ("What color is the car?", "red"),
            ],
        ),
        (
            "a bride and groom pose in front of the church",
            [
                ("Who poses in front of the church?", "a bride and groom"),
                ("Where do the bride and groom pose?", "in front of the church"),
            ],
        ),
        (
            "black and white photo of a cat sleeping on a sofa",
            [
                ("What is sleeping on the sofa?", "a cat"),
                ("Where is the cat sleeping?", "on a sofa"),
                ("What color is the photo?", "black and white"),
            ],
        ),
        (
            "A man riding a bike in the park.",
            [
                ("Where is the bike?", "in the park"),
                ("Who is riding a bike in the park?", "A man"),
                ("What is the man riding?", "a bike"),
            ],
        ),
        (
            "two young women sitting on a wooden bench at sunset",
            [
                ("Who is sitting on the wooden bench?", "two young women"),
                ("How many young women are there?", "two"),
                ("Where are the young women sitting?", "on a wooden bench"),
                ("Who is sitting on a wooden bench at sunset?", "two young women"),
            ],
        ),
    ],
)
def test_cc3m_style_captions(caption, expected):
    assert kept(caption) == expected


def test_clothing_and_time_are_not_places():
    pairs = kept("woman in a red dress walking down the street at night")
    assert ("What color is the dress?", "red") in pairs
    assert all(not q.startswith("Where") for q, _ in pairs)


@pytest.mark.parametrize(
    "caption", ["the view from the top of the mountain", "", "   ", "!!! ???", "a", "the the the"]
)
def test_captions_without_a_reading_yield_nothing(caption):
    assert questions(caption) == []


def test_never_raises_and_answers_are_spans():
    rng = random.Random(0)
    vocab = "a the two red man walking on in to the left of and is dog runs beach , . ' - 3".split()
    for _ in range(2000):
        caption = " ".join(rng.choices(vocab, k=rng.randrange(0, 12)))
        for question, answer in questions(caption):
            assert answer in caption and question.endswith("?")


def test_backend_interface():
    backend = RulesQuestioner()
    backend.load()
    assert backend.generator == "rules"
    assert backend.candidates(["a red circle", ""]) == [[QAPair("What color is the circle?", "red")], []]


# base form: third person singular
VERBS = dict(run="runs", watch="watches", fly="flies", go="goes", pose="poses", cross="crosses", lie="lies")


@pytest.mark.parametrize("base, verb", VERBS.items())
def test_lemma_and_third_person(verb, base):
    assert lemma(verb) == base
    assert third_person(base) == verb
