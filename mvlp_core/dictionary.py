"""A bilingual en→xx word dictionary mined from symmetrized alignments (for M³P code-switching).

Every link of every aligned pair counts one (English word, xx word) co-occurrence; a pair is kept
when it was seen at least `min_count` times and makes up at least `min_prob` of the English
word's links (p(xx | en)). Both sides are lowercased, so sentence-initial capitals do not split
counts. One-off links (alignment noise) and rare function-word pairings fall below the
thresholds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mvlp_core import atomic

HEADER = "en\txx\tcount\tprob"


@dataclass(frozen=True)
class Entry:
    en: str
    xx: str
    count: int
    prob: float


def count_links(tables: Iterable[pa.Table]) -> Counter[tuple[str, str]]:
    """(en word, xx word) link counts over tables with the align stage's columns `words_en`,
    `words` (lists of words) and `links` (lists of [en index, xx index]). Counted in Arrow: the
    linked words are gathered by index and grouped; only each distinct word is lowercased in
    Python (str.lower, so the counts are the same as lowercasing every occurrence)."""
    counts: Counter[tuple[str, str]] = Counter()
    for table in tables:
        links = table.column("links").combine_chunks()
        if not pc.sum(pc.list_value_length(links)).as_py():  # no rows, or no links (None, 0)
            continue
        rows = pc.list_parent_indices(links).to_numpy()
        pairs = pc.list_flatten(pc.list_flatten(links)).to_numpy().reshape(-1, 2)
        en = _linked_words(table.column("words_en").combine_chunks(), rows, pairs[:, 0])
        xx = _linked_words(table.column("words").combine_chunks(), rows, pairs[:, 1])
        grouped = pa.table({"en": en, "xx": xx}).group_by(["en", "xx"]).aggregate([([], "count_all")])
        for e, x, n in zip(*(grouped.column(c).to_pylist() for c in ("en", "xx", "count_all"))):
            counts[(e, x)] += n
    return counts


def _linked_words(words: pa.ListArray, rows: np.ndarray, index: np.ndarray) -> pa.Array:
    """Lowercased `words[row][index]` for every link."""
    flat = pc.list_flatten(words)
    starts = words.offsets.to_numpy()[:-1] - words.offsets[0].as_py()
    picked = pc.take(flat, pa.array(starts[rows] + index)).dictionary_encode()
    lowered = pa.array([w.lower() for w in picked.dictionary.to_pylist()], pa.string())
    return pc.take(lowered, picked.indices)


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
