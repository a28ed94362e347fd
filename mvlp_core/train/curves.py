"""metrics.jsonl -> the loss history (a resumed run re-logs steps: the latest row of a step wins)
and the loss-curve PNG, one line per task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mvlp_core.atomic import atomic_path

METRICS = "metrics.jsonl"  # in the pretrain stage folder: one JSON row per logged step or event


def task_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The `loss_<task>` keys the rows hold, in the order they first appear (a family logs its own)."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update((k, None) for k in r if k.startswith("loss_"))
    return list(seen)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def history(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training rows by step (events dropped); after a resume the re-run steps replace the old ones."""
    by_step = {r["step"]: r for r in rows if "event" not in r and "loss" in r}
    return [by_step[s] for s in sorted(by_step)]


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    h = history(rows)
    if not h:
        return {}
    resumes = [r["step"] for r in rows if r.get("event") == "resume"]
    last = h[-1]
    out = {
        "step": last["step"],
        "loss_first": round(h[0]["loss"], 4),
        "loss_last": round(last["loss"], 4),
        "samples_seen": last.get("samples"),
        "resumed_at": resumes,
        "samples_per_second": round(sum(r["samples_per_second"] for r in h) / len(h), 2),
        "tokens_per_second": round(sum(r.get("tokens_per_second", 0) for r in h) / len(h), 1),
    }
    out.update({k: round(last[k], 4) for k in task_keys([last]) if last.get(k) is not None})
    if last.get("mfu") is not None:
        out["mfu"] = round(last["mfu"], 4)
    return out


def plot(rows: list[dict[str, Any]], out: Path, title: str = "pretrain") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = history(rows)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["step"] for r in h], [r["loss"] for r in h], label="total", linewidth=2, color="black")
    for key in task_keys(h):
        pts = [(r["step"], r[key]) for r in h if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), label=key.removeprefix("loss_"), linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out)
