"""IGLUE-style outputs from unit results: the nested results dict (``mvlp status``), CSV tables
``model,en,<langs>,avg`` (avg without English) per task x setting x metric, and a per-language bar
chart."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from mvlp_core import atomic
from mvlp_core.eval.metrics import average_without_english

Result = dict[str, Any]


def nested(results: list[Result]) -> dict[str, Any]:
    """{task: {setting: {lang: headline score}, "metric": ..., "chance": ...}} (chance from English
    zero-shot when present, else the first unit's)."""
    out: dict[str, Any] = {}
    for r in results:
        if r.get("setting") == "finetune":
            continue
        task = out.setdefault(r["task"], {"metric": r["headline"], "chance": None})
        task.setdefault(r["setting"], {})[r["lang"]] = round(r["score"], 2)
        if task["chance"] is None or (r["lang"] == "en" and r["setting"] == "zero-shot"):
            task["chance"] = round(r["chance"], 2)
    return out


def table_rows(results: list[Result], model: str) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(task, setting, metric) -> one-row table {model, en, <langs...>, avg}."""
    tables: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in results:
        if r.get("setting") == "finetune":
            continue
        for metric, value in r["metrics"].items():
            row = tables.setdefault((r["task"], r["setting"], metric), {})
            row[r["lang"]] = round(value, 2)
    out = {}
    for key, by_lang in sorted(tables.items()):
        langs = (["en"] if "en" in by_lang else []) + sorted(lang for lang in by_lang if lang != "en")
        avg = average_without_english(by_lang)
        row = {
            "model": model,
            **{lang: by_lang[lang] for lang in langs},
            "avg": round(avg, 2) if avg is not None else "",
        }
        out[key] = [row]
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)

    with atomic.atomic_open(path, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())


def bar_chart(results: list[Result], path: Path, title: str) -> None:
    """One panel per task: headline score per language and setting, chance as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = nested(results)
    tasks = list(data)
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4 * max(1, len(tasks)), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        settings = [s for s in data[task] if s not in ("metric", "chance")]
        langs = sorted({lang for s in settings for lang in data[task][s]}, key=lambda x: (x != "en", x))
        width = 0.8 / max(1, len(settings))
        for k, setting in enumerate(settings):
            xs = [i + k * width for i, lang in enumerate(langs) if lang in data[task][setting]]
            ys = [data[task][setting][lang] for lang in langs if lang in data[task][setting]]
            ax.bar(xs, ys, width, label=setting)
        if data[task]["chance"] is not None:
            ax.axhline(data[task]["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(langs))], langs)
        ax.set_title(f"{task} ({data[task]['metric']})")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
