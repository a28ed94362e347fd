"""grow-diag-final-and symmetrization (Koehn et al. 2003), exactly as fast_align's `atools`.

A directional aligner links each target word to at most one source word (and vice versa for the
reverse run); the union of both is noisy and the intersection sparse. grow-diag-final-and starts
from the intersection, grows it with union links next to existing links (diagonals included)
that cover a still-unaligned word, then adds directional links whose two words are both still
unaligned. Order matters, so the loops follow atools: growth sweeps the remaining union links in
(i, j) order, links added during a sweep count immediately, sweeps repeat until none adds a
link; the final-and step scans the forward links, then the reverse links, in (i, j) order.
"""

from __future__ import annotations

from collections.abc import Iterable

Link = tuple[int, int]

_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))


def grow_diag_final_and(forward: Iterable[Link], reverse: Iterable[Link]) -> list[Link]:
    """Symmetrize two directional alignments given as (source index, target index) links.

    Both arguments use source-first order (eflomal writes its reverse file that way too).
    Returns the symmetrized links sorted.
    """
    fwd, rev = set(forward), set(reverse)
    if fwd == rev:  # intersection = union: nothing to grow, every word of a link is aligned
        return sorted(fwd)
    result: set[Link] = set()
    src_aligned: set[int] = set()
    trg_aligned: set[int] = set()

    def add(link: Link) -> None:
        result.add(link)
        src_aligned.add(link[0])
        trg_aligned.add(link[1])

    for link in sorted(fwd & rev):
        add(link)

    pending = sorted((fwd | rev) - result)
    grew = True
    while grew:
        grew = False
        for i, j in pending:
            if (i not in src_aligned or j not in trg_aligned) and any(
                (i + di, j + dj) in result for di, dj in _NEIGHBOURS
            ):
                add((i, j))
                grew = True
        pending = [link for link in pending if link not in result]

    for directional in (fwd, rev):
        for i, j in sorted(directional):
            if i not in src_aligned and j not in trg_aligned:
                add((i, j))
    return sorted(result)
