"""Stable sample keys: derived from (dataset, source row), fixed width, no dots.

img2dataset's own keys are positional; ours survive re-ordering, re-sharding and re-runs, and every
stage joins on them. No dots, because WebDataset splits member names at the first dot.
"""

from __future__ import annotations

import hashlib
import re

ROW_DIGITS = 9
_KEY_RE = re.compile(rf"^[a-z0-9]{{1,12}}-\d{{{ROW_DIGITS}}}$")


def make_key(dataset: str, row: int) -> str:
    if not re.fullmatch(r"[a-z0-9]{1,12}", dataset):
        raise ValueError(f"dataset name {dataset!r} must be 1-12 lowercase letters or digits")
    if not 0 <= row < 10**ROW_DIGITS:
        raise ValueError(f"row {row} out of range for a {ROW_DIGITS}-digit key")
    return f"{dataset}-{row:0{ROW_DIGITS}d}"


def is_valid_key(key: str) -> bool:
    return bool(_KEY_RE.match(key))


def in_fraction(key: str, fraction: float, salt: str = "") -> bool:
    """Deterministic sampling: the same key is always in or out of a given fraction."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
