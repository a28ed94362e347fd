"""Stage-specific Prefect artifacts beyond the summary table.

Images go in markdown artifacts with the PNG embedded as a data URI (`create_image_artifact` only
takes a URL, and a local run has no server for the file); the figures behind them also go in
tables, readable where the image is not.
pretrain: the loss curve, the curve as a table (step, total and per-task loss), final metrics.
iglue-eval: the results table (task x setting x language vs chance) and the per-language bars.
report: the run report itself, its relative image links replaced by embedded images.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mvlp_core import pipeline
from mvlp_core.spec import PipelineSpec
from mvlp_core.stages.iglue_eval import CHART
from mvlp_core.stages.pretrain import CURVE
from mvlp_core.stages.report import FIGURES, REPORT
from mvlp_core.train import curves


def png_markdown(png: Path, alt: str) -> str:
    """A markdown image with the PNG inline (a data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"


def publish_pretrain(spec: PipelineSpec, state: dict[str, Any]) -> None:
    folder = pipeline.stage_dir(spec, "pretrain")
    png = folder / CURVE
    if png.exists():
        create_markdown_artifact(
            key="pretrain-loss-curve",
            markdown=f"### pretrain loss ({spec.name})\n\n{png_markdown(png, 'loss curve')}\n\nFile: `{png}`",
            description="pretrain: total and per-task loss by step",
        )
    rows = curves.history(curves.read_metrics(folder / "metrics.jsonl"))
    keys = ["step", "loss", *[k for k in curves.TASK_KEYS if any(k in r for r in rows)], "samples_per_second"]
    create_table_artifact(
        key="pretrain-curve",
        table=[{k: round(r[k], 4) if isinstance(r.get(k), float) else r.get(k) for k in keys} for r in rows],
        description="pretrain: logged steps",
    )
    final = {k: v for k, v in state.items() if not isinstance(v, (dict, list))}
    create_table_artifact(
        key="pretrain-metrics",
        table=[{"metric": k, "value": v} for k, v in sorted(final.items())],
        description="pretrain: final metrics (also in `mvlp status --json`)",
    )


def iglue_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task x setting: metric, chance, then the score of each language."""
    rows = []
    for task, by_setting in results.items():
        for setting, scores in by_setting.items():
            if setting not in ("metric", "chance"):
                rows.append(
                    {
                        "task": task,
                        "setting": setting,
                        "metric": by_setting["metric"],
                        "chance": by_setting["chance"],
                        **scores,
                    }
                )
    return rows


def publish_iglue_eval(spec: PipelineSpec, state: dict[str, Any]) -> None:
    create_table_artifact(
        key="iglue-eval-results",
        table=iglue_rows(state.get("results", {})),
        description="iglue-eval: headline score per task, setting and language (chance beside it)",
    )
    png = pipeline.stage_dir(spec, "iglue-eval") / CHART
    if png.exists():
        create_markdown_artifact(
            key="iglue-eval-bars",
            markdown=f"### IGLUE per language ({spec.name})\n\n{png_markdown(png, 'IGLUE bars')}\n\nFile: `{png}`",
            description="iglue-eval: score per language and setting, chance dashed",
        )


def publish_report(spec: PipelineSpec, state: dict[str, Any]) -> None:
    folder = pipeline.stage_dir(spec, "report")
    text = (folder / REPORT).read_text(encoding="utf-8")
    for name in FIGURES.values():
        png = folder / name
        if png.exists():
            text = re.sub(
                rf"!\[([^\]]*)\]\({re.escape(name)}\)", lambda m, png=png: png_markdown(png, m[1]), text
            )
    create_markdown_artifact(
        key="run-report", markdown=text, description=f"{spec.name}: the run report ({folder / REPORT})"
    )


PUBLISHERS = {"pretrain": publish_pretrain, "iglue-eval": publish_iglue_eval, "report": publish_report}


def publish_stage(name: str, spec: PipelineSpec, state: dict[str, Any]) -> None:
    if name in PUBLISHERS:
        PUBLISHERS[name](spec, state)
