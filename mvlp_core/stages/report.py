"""report: one Markdown report of a run — data (each stage's samples in/out, rejects by reason,
seconds, from the manifests), training (pretrain's manifest figures and loss curve) and IGLUE
(headline scores against chance, the IGLUE-style CSV tables, the per-language bar chart).

It reads only what the upstream stages wrote, so it is cheap and always consistent with them. The
figures are copied beside ``report.md`` and linked relatively: the folder is self-contained (copy
it, open it in any Markdown viewer). One unit under the stage contract; the Prefect flow publishes
the same text as a markdown artifact with the images embedded.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from mvlp_core import atomic, contract
from mvlp_core.eval.tables import split_label
from mvlp_core.spec import PipelineSpec
from mvlp_core.stage import Context, Document, Shows, Stage, Work
from mvlp_core.stages.iglue_eval import leaderboard

REPORT = "report.md"
FIGURES = {"pretrain": "loss_curve.png", "iglue-eval": "iglue_bars.png"}
PRETRAIN_KEYS = (
    "step",
    "samples_seen",
    "loss_first",
    "loss_last",
    "loss_trans",
    "loss_cap",
    "loss_qus",
    "loss_itc",
    "samples_per_second",
    "tokens_per_second",
)


def config(spec: PipelineSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "languages": spec.languages}


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(none)"]
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _rejects(rejects: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(rejects.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def data_section(manifests: dict[str, contract.Manifest]) -> list[str]:
    rows = [
        {
            "stage": name,
            "samples in": m.samples_in,
            "samples out": m.samples_out,
            "rejects": _rejects(m.rejects),
            "seconds": m.seconds,
        }
        for name, m in manifests.items()
    ]
    return ["## Data", "", *_table(rows), ""]


def training_section(manifest: contract.Manifest | None, figures: list[str]) -> list[str]:
    """Pretrain's final figures (one column per model where a spec trains several) and the curves."""
    if manifest is None:
        return []
    models = manifest.extra.get("models")
    if models:
        keys = [k for k in PRETRAIN_KEYS if any(k in m for m in models.values())]
        keys += sorted({k for m in models.values() for k in m if k.startswith("loss_") and k not in keys})
        rows = [{"metric": k, **{n: m.get(k, "") for n, m in models.items()}} for k in ["family", *keys]]
    else:
        rows = [{"metric": k, "value": manifest.extra[k]} for k in PRETRAIN_KEYS if k in manifest.extra]
    lines = ["## Training", "", *_table(rows), ""]
    lines += [f"![pretrain loss]({figure})" for figure in figures]
    return [*lines, ""] if figures else lines


def iglue_section(folder: Path, manifest: contract.Manifest | None, figure: str | None) -> list[str]:
    if manifest is None:
        return []
    if "models" in manifest.extra:
        return leaderboard_section(folder, manifest.extra["models"], figure)
    results = manifest.extra.get("results", {})
    splits = manifest.extra.get("splits", {})
    rows = []
    for task, by_setting in results.items():
        chance = by_setting.get("chance")
        for setting, scores in by_setting.items():
            if setting in ("metric", "chance"):
                continue
            others = [v for lang, v in scores.items() if lang != "en"]
            avg = sum(others) / len(others) if others else None
            rows.append(
                {
                    "task": task,
                    "setting": setting,
                    "metric": by_setting.get("metric"),
                    "chance": chance,
                    "en": scores.get("en", ""),
                    "avg (no en)": "" if avg is None else round(avg, 2),
                    "en - chance": ""
                    if "en" not in scores or chance is None
                    else round(scores["en"] - chance, 2),
                    "not test": split_label(splits.get(task, {}).get(setting, {})),
                }
            )
    lines = ["## IGLUE", "", *_table(rows), ""]
    if figure:
        lines += [f"![IGLUE per language]({figure})", ""]
    return lines + csv_tables(folder)


def csv_tables(folder: Path) -> list[str]:
    lines = []
    for path in sorted((folder / "tables").glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            lines += [f"### {path.stem}", "", *_table(list(csv.DictReader(f))), ""]
    return lines


def leaderboard_section(folder: Path, models: dict[str, Any], figure: str | None) -> list[str]:
    """Several models on the same data: zero-shot scores side by side, the chart, the tables."""
    lines = [
        "## IGLUE",
        "",
        "Zero-shot, every model on the same shards:",
        "",
        *_table(leaderboard(models)),
        "",
    ]
    if figure:
        lines += [f"![IGLUE by model]({figure})", ""]
    return lines + csv_tables(folder)


def render(spec: PipelineSpec, inputs: dict[str, Path], figures: dict[str, list[str]]) -> str:
    manifests = {name: m for name, folder in inputs.items() if (m := contract.Manifest.load(folder))}
    lines = [
        f"# {spec.name}: run report",
        "",
        spec.description,
        "" if spec.description else None,
        f"Languages: en, {', '.join(spec.languages)}. Workdir: `{spec.workdir}`.",
        "",
    ]
    lines = [line for line in lines if line is not None]
    lines += data_section(manifests)
    lines += training_section(manifests.get("pretrain"), figures.get("pretrain", []))
    if "iglue-eval" in inputs:
        lines += iglue_section(
            Path(inputs["iglue-eval"]),
            manifests.get("iglue-eval"),
            next(iter(figures.get("iglue-eval", [])), None),
        )
    return "\n".join(lines)


def _figure_sources(spec: PipelineSpec, inputs: dict[str, Path]) -> list[tuple[str, Path, str]]:
    """(stage, figure file, its name beside the report): one loss curve per trained model."""
    out = []
    if "pretrain" in inputs:
        for name, _ in spec.trained_models():
            where = inputs["pretrain"] / name if name else inputs["pretrain"]
            out.append(
                (
                    "pretrain",
                    where / FIGURES["pretrain"],
                    f"loss_curve-{name}.png" if name else FIGURES["pretrain"],
                )
            )
    if "iglue-eval" in inputs:
        out.append(("iglue-eval", inputs["iglue-eval"] / FIGURES["iglue-eval"], FIGURES["iglue-eval"]))
    return out


def plan(ctx: Context) -> Work:
    spec, inputs, out_dir = ctx.spec, ctx.inputs, ctx.out_dir

    def process(unit: str) -> contract.UnitResult:
        figures: dict[str, list[str]] = {}
        for stage, src, name in _figure_sources(spec, inputs):
            if src.exists():
                with atomic.atomic_open(out_dir / name, "wb") as f, open(src, "rb") as s:
                    shutil.copyfileobj(s, f)
                figures.setdefault(stage, []).append(name)
        with atomic.atomic_open(out_dir / REPORT, "w", encoding="utf-8") as f:
            f.write(render(spec, inputs, figures))
        return contract.UnitResult({REPORT: 0, **{n: 0 for ns in figures.values() for n in ns}}, 0, 0)

    return Work(["report"], process, finalize=lambda folder, _: {"report": str(folder / REPORT)})


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    return Shows(
        lines=(f"Report: {folder / REPORT}",),
        documents=(
            Document("run-report", f"{spec.name}: the run report ({folder / REPORT})", folder / REPORT),
        ),
    )


STAGE = Stage(
    "report",
    deps=("ingest", "download", "translate", "align", "qa", "shard", "text-shard", "pretrain", "iglue-eval"),
    config=config,
    plan=plan,
    shows=shows,
)
