"""Steady-state training figures from a run's metrics.jsonl (shared by the training benchmarks)."""

from __future__ import annotations

import statistics
from pathlib import Path


def steady(metrics_path: Path, keys: tuple[str, ...], skip: int) -> dict[str, float]:
    """Median of each of `keys` over the logged rows, the first `skip` (warm-up) dropped."""
    from mvlp_core.train import curves

    rows = curves.history(curves.read_metrics(metrics_path))[skip:]
    return {k: statistics.median(r[k] for r in rows) for k in keys}
