"""Gold word alignments (jsonl) mapped onto the stage's own tokens through character spans.

Gold files tokenize text their own way; character spans make them independent of the stage's
tokenizer. One jsonl line per (English sentence, language):
`{"en", "lang", "xx", "en_spans": [[start, end], ...], "xx_spans": [...], "links": [[i, j], ...]}`
with links over the span indices. Gold links are sure links.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mvlp_core.stages.align.symmetrize import Link

Span = tuple[int, int]


@dataclass(frozen=True)
class GoldPair:
    xx: str
    en_spans: list[Span]
    xx_spans: list[Span]
    links: list[Link]


def load_gold(path: Path) -> dict[tuple[str, str], GoldPair]:
    """Read a gold jsonl file into {(lang, en text): pair}; raises ValueError naming the line."""
    gold: dict[tuple[str, str], GoldPair] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                pair = GoldPair(
                    xx=rec["xx"],
                    en_spans=[(int(s), int(e)) for s, e in rec["en_spans"]],
                    xx_spans=[(int(s), int(e)) for s, e in rec["xx_spans"]],
                    links=[(int(i), int(j)) for i, j in rec["links"]],
                )
                for i, j in pair.links:
                    if not (0 <= i < len(pair.en_spans) and 0 <= j < len(pair.xx_spans)):
                        raise ValueError(f"link {[i, j]} is outside the spans")
                gold[(rec["lang"], rec["en"])] = pair
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{n}: invalid gold alignment line ({err!r})") from None
    return gold


def _covering(spans: list[Span], tokens: list[Span]) -> list[list[int]]:
    """For each gold span, the indices of the tokens that overlap it."""
    return [[k for k, (ts, te) in enumerate(tokens) if ts < e and s < te] for s, e in spans]


def project(pair: GoldPair, en_tokens: list[Span], xx_tokens: list[Span]) -> set[Link]:
    """Gold links as links between stage tokens: every token overlapping gold en word i is
    linked with every token overlapping gold xx word j."""
    en_cover = _covering(pair.en_spans, en_tokens)
    xx_cover = _covering(pair.xx_spans, xx_tokens)
    return {(a, b) for i, j in pair.links for a in en_cover[i] for b in xx_cover[j]}
