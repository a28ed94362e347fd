"""IGLUE-style outputs from unit results: the nested results dict (``mvlp status``), CSV tables
``model,en,<langs>,avg`` (avg without English) per task x setting x metric, and a per-language bar
chart.

A unit that tested on a dev split (IGLUE publishes no test file there: ``mvlp_core.eval.tasks``)
is labelled wherever its score appears: its table gains a last column ``split`` (``dev: en``), the
chart's label reads ``en (dev)``, and ``splits`` lists it for the manifest. Tables whose every
language tested on a test split keep the plain header."""

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


SECONDARY = {"xflickrco": "tr_r1", "wit": "tr_r1"}  # what IGLUE reports beside the headline: TR R@1


def secondary(results: list[Result]) -> dict[str, dict[str, dict[str, float]]]:
    """{task: {setting: {lang: score}}} of the metric IGLUE reports beside a task's headline
    (``SECONDARY``: text retrieval's R@1 beside image retrieval's), for the tasks that have one."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        metric = SECONDARY.get(r["task"])
        if r.get("setting") != "finetune" and metric in r.get("metrics", {}):
            out.setdefault(r["task"], {}).setdefault(r["setting"], {})[r["lang"]] = round(
                r["metrics"][metric], 2
            )
    return out


def split_of(result: Result) -> str:
    """The split a test unit's score comes from (results written before splits were recorded: test)."""
    return result.get("split", "test")


def splits(results: list[Result]) -> dict[str, dict[str, dict[str, str]]]:
    """{task: {setting: {lang: split}}} for the units that did not test on a test split."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for r in results:
        if r.get("setting") != "finetune" and split_of(r) != "test":
            out.setdefault(r["task"], {}).setdefault(r["setting"], {})[r["lang"]] = split_of(r)
    return out


def split_label(by_lang: dict[str, str]) -> str:
    """``dev: en`` for languages scored on a dev split (grouped per split), "" when all were test."""
    other = sorted({s for s in by_lang.values() if s != "test"})
    return "; ".join(f"{s}: {' '.join(sorted(k for k, v in by_lang.items() if v == s))}" for s in other)


def table_rows(results: list[Result], model: str) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(task, setting, metric) -> one-row table {model, en, <langs...>, avg[, split]}."""
    tables: dict[tuple[str, str, str], dict[str, Any]] = {}
    split_by: dict[tuple[str, str], dict[str, str]] = {}
    for r in results:
        if r.get("setting") == "finetune":
            continue
        split_by.setdefault((r["task"], r["setting"]), {})[r["lang"]] = split_of(r)
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
        label = split_label(split_by[key[:2]])
        out[key] = [{**row, "split": label} if label else row]
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

    data, dev = nested(results), splits(results)
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
        suffix = {
            lang: f" ({split})" for by_lang in dev.get(task, {}).values() for lang, split in by_lang.items()
        }
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(langs))], [f"{x}{suffix.get(x, '')}" for x in langs]
        )
        ax.set_title(f"{task} ({data[task]['metric']})")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    _save(fig, path, title)


def leaderboard_chart(models: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """One panel per task: each model's zero-shot English score and its other languages' average
    side by side, chance as a dashed line. `models`: {name: {"results": nested(...), ...}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(t for m in models.values() for t in m["results"]))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(3.6 * max(1, len(tasks)), 3.2), squeeze=False)
    width = 0.8 / max(1, len(models))
    for ax, task in zip(axes[0], tasks):
        chance = None
        for k, (name, m) in enumerate(models.items()):
            zs = m["results"].get(task, {}).get("zero-shot", {})
            chance = chance if chance is not None else m["results"].get(task, {}).get("chance")
            avg = average_without_english(zs)
            ax.bar([k * width, 1 + k * width], [zs.get("en", 0.0), avg or 0.0], width, label=name)
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks([0.4 - width / 2, 1.4 - width / 2], ["en", "avg (no en)"])
        metric = next((m["results"][task]["metric"] for m in models.values() if task in m["results"]), "")
        ax.set_title(f"{task} ({metric})")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    _save(fig, path, title)


def _save(fig: Any, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
