"""Alignment error rate with sure and possible links (Och & Ney 2003), and Pharaoh link parsing.

Scores are corpus-level: link counts are summed over sentences before dividing, as in the
published AER figures, so long sentences weigh more than short ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Link = tuple[int, int]


def parse_pharaoh(line: str, *, one_based: bool = False) -> tuple[set[Link], set[Link]]:
    """Parse `i-j` (sure) and `ipj` (possible) links; returns (sure, possible) with S ⊆ P.

    `one_based` shifts indices down by one, for gold files that count words from 1.
    """
    shift = 1 if one_based else 0
    sure: set[Link] = set()
    possible: set[Link] = set()
    for item in line.split():
        sep = "-" if "-" in item else "p"
        left, _, right = item.partition(sep)
        try:
            link = (int(left) - shift, int(right) - shift)
        except ValueError:
            raise ValueError(f"bad alignment link {item!r} in line {line!r}") from None
        if link[0] < 0 or link[1] < 0:
            raise ValueError(f"negative index in link {item!r}; is the file one-based?")
        possible.add(link)
        if sep == "-":
            sure.add(link)
    return sure, possible


@dataclass(frozen=True)
class AlignmentScore:
    precision: float
    recall: float
    aer: float
    predicted: int
    sure: int
    hit_sure: int = 0
    hit_possible: int = 0


def score(
    sentences: Iterable[tuple[Iterable[Link], Iterable[Link], Iterable[Link]]],
) -> AlignmentScore:
    """Score (predicted A, sure S, possible P) per sentence; P is widened to include S.

    precision = |A∩P|/|A|, recall = |A∩S|/|S|, AER = 1 - (|A∩S| + |A∩P|)/(|A| + |S|).
    A ratio over an empty set is 1.0 (nothing predicted is wrong; nothing required is missed).
    """
    n_a = n_s = a_s = a_p = 0
    for predicted, sure, possible in sentences:
        a, s = set(predicted), set(sure)
        p = set(possible) | s
        n_a += len(a)
        n_s += len(s)
        a_s += len(a & s)
        a_p += len(a & p)
    return _from_counts(n_a, n_s, a_s, a_p)


def combine(scores: Iterable[AlignmentScore]) -> AlignmentScore:
    """The corpus-level score of several parts (chunks) scored separately."""
    parts = list(scores)
    return _from_counts(
        *(sum(getattr(s, f) for s in parts) for f in ("predicted", "sure", "hit_sure", "hit_possible"))
    )


def _from_counts(n_a: int, n_s: int, a_s: int, a_p: int) -> AlignmentScore:
    return AlignmentScore(
        precision=a_p / n_a if n_a else 1.0,
        recall=a_s / n_s if n_s else 1.0,
        aer=1.0 - (a_s + a_p) / (n_a + n_s) if n_a + n_s else 0.0,
        predicted=n_a,
        sure=n_s,
        hit_sure=a_s,
        hit_possible=a_p,
    )
