"""Figures shared by the benchmarks: the row each one reports to the harness, and steady-state
training figures from a run's metrics.jsonl."""

from __future__ import annotations

import statistics
from pathlib import Path


def steady(metrics_path: Path, keys: tuple[str, ...], skip: int) -> dict[str, float]:
    """Median of each of `keys` over the logged rows, the first `skip` (warm-up) dropped."""
    from mvlp_core.train import curves

    rows = curves.history(curves.read_metrics(metrics_path))[skip:]
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def result(
    name: str,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float,
    runs: int,
    higher_is_better: bool,
    notes: str,
    ratio: float | None = None,
) -> dict:
    """One row of results.json: `value` next to its `baseline_value`, both measured here, and their
    ratio (`ratio` where the benchmark pairs its runs and reports the median of the pairs' ratios,
    steadier than a ratio of medians on a machine whose speed drifts)."""
    if ratio is None and baseline_value:
        ratio = value / baseline_value
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(baseline_value, 4),
        "ratio": round(ratio, 4) if ratio is not None else None,
        "runs": runs,
        "higher_is_better": higher_is_better,
        "notes": notes,
    }
