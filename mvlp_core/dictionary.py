"""A bilingual en→xx word dictionary mined from symmetrized alignments (for M³P code-switching).

Every link of every aligned pair counts one (English word, xx word) co-occurrence; a pair is kept
when it was seen at least `min_count` times and makes up at least `min_prob` of the English
word's links (p(xx | en)). Both sides are lowercased, so sentence-initial capitals do not split
counts. One-off links (alignment noise) and rare function-word pairings fall below the
thresholds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mvlp_core import atomic

HEADER = "en\txx\tcount\tprob"


@dataclass(frozen=True)
class Entry:
    en: str
    xx: str
    count: int
    prob: float


def count_links(
    rows: Iterable[tuple[Sequence[str], Sequence[str], Iterable[Sequence[int]]]],
) -> Counter[tuple[str, str]]:
    """(en word, xx word) link counts over rows of (words_en, words_xx, links)."""
    counts: Counter[tuple[str, str]] = Counter()
    for words_en, words_xx, links in rows:
        for i, j in links:
            counts[(words_en[i].lower(), words_xx[j].lower())] += 1
    return counts


def select(counts: Counter[tuple[str, str]], *, min_count: int, min_prob: float) -> list[Entry]:
    """Entries above both thresholds, sorted by English word, then by falling count."""
    totals: Counter[str] = Counter()
    for (en, _), n in counts.items():
        totals[en] += n
    entries = [
        Entry(en, xx, n, round(n / totals[en], 4))
        for (en, xx), n in counts.items()
        if n >= min_count and n / totals[en] >= min_prob
    ]
    return sorted(entries, key=lambda e: (e.en, -e.count, e.xx))


def write_tsv(path: Path, entries: Iterable[Entry]) -> int:
    lines = [HEADER] + [f"{e.en}\t{e.xx}\t{e.count}\t{e.prob}" for e in entries]
    with atomic.atomic_open(Path(path), encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines) - 1


def read_tsv(path: Path) -> list[Entry]:
    """Read a dictionary file; raises ValueError naming the line when it is malformed."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != HEADER:
        raise ValueError(f"{path}: expected the header {HEADER!r}")
    entries = []
    for n, line in enumerate(lines[1:], 2):
        try:
            en, xx, count, prob = line.split("\t")
            entries.append(Entry(en, xx, int(count), float(prob)))
        except ValueError:
            raise ValueError(f"{path}:{n}: expected en<TAB>xx<TAB>count<TAB>prob") from None
    return entries
