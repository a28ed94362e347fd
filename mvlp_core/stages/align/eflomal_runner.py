"""Run eflomal over tokenized sentence pairs, learn and apply its priors, symmetrize.

eflomal is a Bayesian (Gibbs-sampled) IBM-1/HMM/fertility aligner: its statistics come from the
corpus it is given, so a tiny corpus aligns poorly. Priors carry statistics learned once from a
large corpus (lexical, jump and fertility counts, eflomal's own `makepriors` format) into every
later call, which is what lets a large stage align in independent chunks. eflomal seeds its
sampler from /dev/urandom, so two runs differ slightly. Its binary signals failure only by
missing output, which is checked here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from mvlp_core import atomic
from mvlp_core.stages.align.symmetrize import Link, grow_diag_final_and

# eflomal's input writer silently empties sentences of 0x400 tokens or more.
MAX_TOKENS = 0x3FF

Sentences = Sequence[Sequence[str]]


def _read_links(path: Path, n: int) -> list[list[Link]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if len(lines) != n:
        raise RuntimeError(
            f"eflomal wrote {len(lines)} alignment lines to {path.name} for {n} sentence pairs; "
            "the aligner failed (out of memory or disk in the temporary folder?)"
        )
    out = []
    for line in lines:  # "i-j i-j ...": every number of the line at once, paired
        numbers = list(map(int, line.replace("-", " ").split()))
        out.append(list(zip(numbers[::2], numbers[1::2])))
    return out


def _line(tokens: Sequence[str]) -> str:
    """One sentence as eflomal reads it. Lowercased here (eflomal lowercases its vocabulary
    too) so that priors learned from these lines match every later lookup."""
    if not tokens or len(tokens) > MAX_TOKENS:
        raise ValueError(f"eflomal needs 1..{MAX_TOKENS} tokens per sentence, got {len(tokens)}")
    line = " ".join(tokens)
    if line.split() != list(tokens):  # an empty token or one holding whitespace splits otherwise
        raise ValueError(f"tokens must be non-empty and free of whitespace: {list(tokens)!r}")
    return " ".join([t.lower() for t in tokens]) + "\n"


def align_directional(
    source: Sentences, target: Sentences, *, model: int = 3, priors: Path | None = None
) -> tuple[list[list[Link]], list[list[Link]]]:
    """eflomal's forward and reverse links per pair, both as (source index, target index)."""
    if len(source) != len(target):
        raise ValueError(f"{len(source)} source sentences but {len(target)} target sentences")
    if not source:
        return [], []
    from eflomal import Aligner

    src_lines = [_line(s) for s in source]
    trg_lines = [_line(t) for t in target]
    with tempfile.TemporaryDirectory(prefix="mvlp-eflomal-") as tmp:
        fwd_path, rev_path = Path(tmp) / "fwd", Path(tmp) / "rev"
        priors_file = open(priors, encoding="utf-8") if priors else None
        try:
            Aligner(model=model).align(
                src_lines,
                trg_lines,
                links_filename_fwd=str(fwd_path),
                links_filename_rev=str(rev_path),
                priors_input=priors_file,
                quiet=True,
            )
        finally:
            if priors_file:
                priors_file.close()
        return _read_links(fwd_path, len(source)), _read_links(rev_path, len(source))


def align_corpus(
    source: Sentences, target: Sentences, *, model: int = 3, priors: Path | None = None
) -> list[list[Link]]:
    """Align sentence pairs of tokens; returns per pair the grow-diag-final-and links
    (source index, target index), sorted. Tokens are lowercased before aligning."""
    forward, reverse = align_directional(source, target, model=model, priors=priors)
    return [grow_diag_final_and(f, r) for f, r in zip(forward, reverse)]


def write_priors(
    path: Path,
    source: Sentences,
    target: Sentences,
    forward: Sequence[Sequence[Link]],
    reverse: Sequence[Sequence[Link]],
) -> int:
    """Write eflomal priors (LEX/HMM/FERT counts, `eflomal-makepriors` format) learned from
    aligned pairs, atomically; returns the number of lexical entries."""
    from eflomal import calculate_priors
    from eflomal import write_priors as write_eflomal_priors

    src_lines = [_line(s) for s in source]
    trg_lines = [_line(t) for t in target]
    fwd_lines = [" ".join(f"{i}-{j}" for i, j in links) for links in forward]
    rev_lines = [" ".join(f"{i}-{j}" for i, j in links) for links in reverse]
    lexical, hmm_fwd, hmm_rev, fert_fwd, fert_rev = calculate_priors(
        src_lines, trg_lines, fwd_lines, rev_lines
    )
    with atomic.atomic_open(Path(path), encoding="utf-8") as f:
        write_eflomal_priors(f, lexical, hmm_fwd, hmm_rev, fert_fwd, fert_rev)
    return len(lexical)


def learn_priors(path: Path, source: Sentences, target: Sentences, *, model: int = 3) -> int:
    """Align a corpus once and write the priors it yields (the first pass of a chunked run)."""
    forward, reverse = align_directional(source, target, model=model)
    return write_priors(path, source, target, forward, reverse)


def check_priors(path: Path) -> None:
    """Raise ValueError naming the line when `path` is not an eflomal priors file."""
    from eflomal import read_priors

    try:
        with open(path, encoding="utf-8") as f:
            read_priors(f)
    except (ValueError, IndexError, TypeError) as err:
        raise ValueError(f"{path} is not an eflomal priors file ({err})") from None
