"""Stage-specific Prefect artifacts beyond the summary table.

pretrain: the loss curve as a markdown artifact with the PNG embedded as a data URI
(`create_image_artifact` only takes a URL, and a local run has no server for the file), the curve
itself as a table (step, total and per-task loss: readable even where the image is not), and the
final metrics as a table."""

from __future__ import annotations

import base64
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mvlp_core import pipeline
from mvlp_core.spec import PipelineSpec
from mvlp_core.stages.pretrain import CURVE
from mvlp_core.train import curves


def publish_pretrain(spec: PipelineSpec, state: dict[str, Any]) -> None:
    folder = pipeline.stage_dir(spec, "pretrain")
    png = folder / CURVE
    if png.exists():
        data = base64.b64encode(png.read_bytes()).decode()
        create_markdown_artifact(
            key="pretrain-loss-curve",
            markdown=f"### pretrain loss ({spec.name})\n\n![loss curve](data:image/png;base64,{data})\n\n"
            f"File: `{png}`",
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
        key="pretrain-metrics", table=[{"metric": k, "value": v} for k, v in sorted(final.items())],
        description="pretrain: final metrics (also in `mvlp status --json`)",
    )


PUBLISHERS = {"pretrain": publish_pretrain}


def publish_stage(name: str, spec: PipelineSpec, state: dict[str, Any]) -> None:
    if name in PUBLISHERS:
        PUBLISHERS[name](spec, state)
