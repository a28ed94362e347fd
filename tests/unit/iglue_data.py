"""Where the real IGLUE annotations are: ``../shared/data/iglue`` beside the checkout (CI), or one
level higher for a worktree under ``wt/``."""

from __future__ import annotations

from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
REAL_IGLUE = next(
    (
        p
        for p in (
            _ROOT.parent / "shared" / "data" / "iglue",
            _ROOT.parent.parent / "shared" / "data" / "iglue",
        )
        if p.exists()
    ),
    _ROOT.parent / "shared" / "data" / "iglue",
)
needs_real = pytest.mark.skipif(not REAL_IGLUE.exists(), reason=f"{REAL_IGLUE} absent")
