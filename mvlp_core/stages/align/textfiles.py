"""Align parallel text files with the stage's machinery, and read the gold formats of the WPT
shared tasks, so any corpus and any published gold set can be aligned and scored.

Input lines are either raw text (tokenized with mvlp's tokenizers for the given languages) or
pre-tokenized (split on whitespace, as gold sets are: their links index those tokens). Formats:
`plain` (one sentence per line), `joint` (`src ||| tgt`, fast_align/eflomal style) and `wpt`
(`<s snum=N>text</s>`, CRLF tolerated). Gold links: `pharaoh` (`i-j` sure, `ipj` possible per
line) and `wpt` (`snum i j [S|P]` lines, 1-based, 0 = NULL).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from mvlp_core.stages.align.aer import Link, parse_pharaoh
from mvlp_core.stages.align.eflomal_runner import MAX_TOKENS, align_directional, write_priors
from mvlp_core.stages.align.symmetrize import grow_diag_final_and
from mvlp_core.stages.align.tokenize import tokenize

_WPT_LINE = re.compile(r"^\s*<s snum=(\d+)>(.*?)</s>\s*$")
Gold = tuple[set[Link], set[Link]]  # (sure, possible) of one sentence pair


def read_lines(path: Path, fmt: str = "plain") -> list[str]:
    """Sentences of a `plain` or `wpt` file (line endings, tags and outer spaces removed)."""
    lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    if fmt == "plain":
        return [line.strip() for line in lines]
    if fmt == "wpt":
        return [text.strip() for _, text in _wpt_sentences(path, lines)]
    raise ValueError(f"unknown text format {fmt!r}; use plain or wpt")


def wpt_numbers(path: Path) -> list[int]:
    """The `snum` of every sentence of a WPT text file, in file order."""
    lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    return [snum for snum, _ in _wpt_sentences(path, lines)]


def _wpt_sentences(path: Path, lines: list[str]) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _WPT_LINE.match(line)
        if m is None:
            raise ValueError(f"{path}:{n}: expected <s snum=N>...</s>, got {line[:60]!r}")
        out.append((int(m.group(1)), m.group(2)))
    return out


def read_joint(path: Path) -> tuple[list[str], list[str]]:
    """The two sides of a `src ||| tgt` file."""
    src, tgt = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        parts = line.split("|||")
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected one ' ||| ' between the two sentences")
        src.append(parts[0].strip())
        tgt.append(parts[1].strip())
    return src, tgt


def words(line: str, lang: str | None, pretokenized: bool) -> list[str]:
    """A line's words: whitespace-split when pre-tokenized, else mvlp's tokenizer for `lang`."""
    if pretokenized:
        return line.split()
    if lang is None:
        raise ValueError("raw text needs its language to be tokenized; give it or pretokenize")
    return [w for w, _, _ in tokenize(line, lang)]


def align_sentences(
    source: Sequence[Sequence[str]],
    target: Sequence[Sequence[str]],
    *,
    context: tuple[Sequence[Sequence[str]], Sequence[Sequence[str]]] = ((), ()),
    model: int = 3,
    priors: Path | None = None,
    save_priors: Path | None = None,
) -> list[list[Link]]:
    """grow-diag-final-and links per pair. `context` pairs are aligned together with them (more
    statistics) but not returned; pairs with an empty or over-long side get no links."""
    ok = [
        i
        for i, (s, t) in enumerate(zip(source, target))
        if 0 < len(s) <= MAX_TOKENS and 0 < len(t) <= MAX_TOKENS
    ]
    ctx = [(s, t) for s, t in zip(*context) if 0 < len(s) <= MAX_TOKENS and 0 < len(t) <= MAX_TOKENS]
    src = [s for s, _ in ctx] + [source[i] for i in ok]
    tgt = [t for _, t in ctx] + [target[i] for i in ok]
    forward, reverse = align_directional(src, tgt, model=model, priors=priors)
    if save_priors is not None:
        write_priors(save_priors, src, tgt, forward, reverse)
    links: list[list[Link]] = [[] for _ in source]
    for i, f, r in zip(ok, forward[len(ctx) :], reverse[len(ctx) :]):
        links[i] = grow_diag_final_and(f, r)
    return links


def format_links(links: Sequence[Link]) -> str:
    return " ".join(f"{i}-{j}" for i, j in links)


def read_links(path: Path) -> list[set[Link]]:
    """Predicted links, 0-based `i-j` per line."""
    return [parse_pharaoh(line)[1] for line in Path(path).read_text(encoding="utf-8").splitlines()]


def read_gold(
    path: Path,
    fmt: str = "pharaoh",
    *,
    one_based: bool = False,
    reversed_: bool = False,
    sentences: Path | None = None,
) -> list[Gold]:
    """Gold (sure, possible) per sentence pair, 0-based, source index first.

    `reversed_` swaps the two indices (a gold file whose i indexes the other side). For `wpt`,
    indices are 1-based and `sentences` (the WPT text file) gives the order of the pairs;
    without it, pairs follow ascending `snum`.
    """
    if fmt == "pharaoh":
        gold = [
            parse_pharaoh(line, one_based=one_based)
            for line in Path(path).read_text(encoding="utf-8").splitlines()
        ]
    elif fmt == "wpt":
        gold = _read_wpt_gold(path, sentences)
    else:
        raise ValueError(f"unknown gold format {fmt!r}; use pharaoh or wpt")
    if reversed_:
        gold = [({(j, i) for i, j in s}, {(j, i) for i, j in p}) for s, p in gold]
    return gold


def _read_wpt_gold(path: Path, sentences: Path | None) -> list[Gold]:
    sure: dict[int, set[Link]] = defaultdict(set)
    possible: dict[int, set[Link]] = defaultdict(set)
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            snum, i, j = (int(f) for f in fields[:3])
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'snum i j [S|P]', got {line!r}") from None
        kind = fields[3].upper() if len(fields) > 3 else "S"
        possible[snum]  # a sentence whose links all go to NULL still counts
        if i == 0 or j == 0:
            continue
        possible[snum].add((i - 1, j - 1))
        if kind == "S":
            sure[snum].add((i - 1, j - 1))
    order = wpt_numbers(sentences) if sentences else sorted(possible)
    return [(sure[snum], possible[snum]) for snum in order]
