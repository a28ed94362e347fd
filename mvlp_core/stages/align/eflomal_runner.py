"""Run eflomal over a whole tokenized corpus and symmetrize its two directions.

eflomal is a Bayesian (Gibbs-sampled) IBM-1/HMM/fertility aligner: its statistics come from the
whole corpus, so one call aligns every pair of a language at once, and alignments of tiny
corpora (a handful of pairs) are valid but poor. It seeds its sampler randomly, so two runs may
differ slightly. Its binary signals failure only by missing output, which is checked here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from mvlp_core.stages.align.symmetrize import Link, grow_diag_final_and

# eflomal's input writer silently empties sentences of 0x400 tokens or more.
MAX_TOKENS = 0x3FF


def _read_links(path: Path, n: int) -> list[list[Link]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if len(lines) != n:
        raise RuntimeError(
            f"eflomal wrote {len(lines)} alignment lines to {path.name} for {n} sentence pairs; "
            "the aligner failed (out of memory or disk in the temporary folder?)"
        )
    return [[_link(item) for item in line.split()] for line in lines]


def _link(item: str) -> Link:
    i, _, j = item.partition("-")
    return int(i), int(j)


def _line(tokens: Sequence[str]) -> str:
    if not tokens or len(tokens) > MAX_TOKENS:
        raise ValueError(f"eflomal needs 1..{MAX_TOKENS} tokens per sentence, got {len(tokens)}")
    if any(not t or t != "".join(t.split()) for t in tokens):
        raise ValueError(f"tokens must be non-empty and free of whitespace: {list(tokens)!r}")
    return " ".join(t.lower() for t in tokens) + "\n"


def align_corpus(
    source: Sequence[Sequence[str]], target: Sequence[Sequence[str]], *, model: int = 3
) -> list[list[Link]]:
    """Align sentence pairs of tokens; returns per pair the grow-diag-final-and links
    (source index, target index), sorted. Tokens are lowercased before aligning."""
    if len(source) != len(target):
        raise ValueError(f"{len(source)} source sentences but {len(target)} target sentences")
    if not source:
        return []
    from eflomal import Aligner

    src_lines = [_line(s) for s in source]
    trg_lines = [_line(t) for t in target]
    with tempfile.TemporaryDirectory(prefix="mvlp-eflomal-") as tmp:
        fwd_path, rev_path = Path(tmp) / "fwd", Path(tmp) / "rev"
        Aligner(model=model).align(
            src_lines,
            trg_lines,
            links_filename_fwd=str(fwd_path),
            links_filename_rev=str(rev_path),
            quiet=True,
        )
        forward = _read_links(fwd_path, len(source))
        reverse = _read_links(rev_path, len(source))
    return [grow_diag_final_and(f, r) for f, r in zip(forward, reverse)]
