"""Stage summaries as rows: the same figures for Prefect table artifacts, the CLI and --json."""

from __future__ import annotations

from typing import Any


def rejects_text(rejects: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(rejects.items(), key=lambda kv: -kv[1])) or "-"


def summary_row(stage: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "state": state["state"],
        "samples_in": state.get("samples_in", ""),
        "samples_out": state.get("samples_out", ""),
        "rejects": rejects_text(state.get("rejects", {})),
        "seconds": state.get("seconds", ""),
    }


def rejects_rows(
    stage: str, rejects: dict[str, int], filtered: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """Rows of the "rejects by reason" artifact: samples rejected, and candidates a stage filtered
    inside a sample (e.g. qa pairs) when its manifest reports them under extra["filtered"]."""
    rows = []
    for level, counts in (("sample", rejects), ("candidate", filtered or {})):
        total = sum(counts.values())
        for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append(
                {"stage": stage, "level": level, "reason": reason, "count": n, "share": f"{n / total:.1%}"}
            )
    return rows or [{"stage": stage, "level": "sample", "reason": "-", "count": 0, "share": "-"}]


def throughput_rows(stage: str, state: dict[str, Any]) -> list[dict[str, Any]]:
    seconds = state.get("seconds") or 0.0
    n_in, n_out = state.get("samples_in") or 0, state.get("samples_out") or 0
    return [
        {
            "stage": stage,
            "samples_in": n_in,
            "samples_out": n_out,
            "seconds": round(seconds, 2),
            "samples_per_second": round(n_in / seconds, 1) if seconds else "",
        }
    ]
