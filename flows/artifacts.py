"""Prefect artifacts, the same for every stage: the summary, rejects and throughput tables, then
whatever the stage's descriptor shows (`Stage.shows`): its tables, its figures and its documents.

Images go in markdown artifacts with the PNG embedded as a data URI (`create_image_artifact` only
takes a URL, and a local run has no server for the file); the figures behind them also go in
tables where the stage shows them, readable where the image is not.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.summary import rejects_rows, summary_row, throughput_rows
from mvlp_core import pipeline
from mvlp_core.spec import PipelineSpec

_IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s:]+\.png)\)")


def png_markdown(png: Path, alt: str) -> str:
    """A markdown image with the PNG inline (a data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"


def embed_images(text: str, folder: Path) -> str:
    """Markdown with its relative PNG links replaced by the images themselves (when present)."""

    def inline(m: re.Match[str]) -> str:
        png = folder / m[2]
        return png_markdown(png, m[1]) if png.is_file() else m[0]

    return _IMAGE_LINK.sub(inline, text)


def artifact_key(key: str) -> str:
    """`key` as Prefect takes an artifact key (lowercase letters, digits and dashes): the keys a
    stage derives from a model's name (which may hold capitals and underscores) included."""
    return re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")


def publish_stage(name: str, spec: PipelineSpec, state: dict[str, Any]) -> None:
    create_table_artifact(
        key=f"{name}-summary",
        table=[summary_row(name, state)],
        description=f"{name}: samples in/out, rejects by reason, seconds",
    )
    create_table_artifact(
        key=f"{name}-rejects",
        table=rejects_rows(name, state.get("rejects", {}), state.get("filtered")),
        description=f"{name}: rejects by reason",
    )
    create_table_artifact(
        key=f"{name}-throughput",
        table=throughput_rows(name, state),
        description=f"{name}: samples per second",
    )
    stage = pipeline.stage(name)
    if stage.shows is None or state.get("state") != "complete":
        return
    shows = stage.shows(spec, pipeline.stage_dir(spec, name), state)
    for table in shows.tables:
        create_table_artifact(key=artifact_key(table.key), table=table.rows, description=table.description)
    for figure in shows.figures:
        if figure.path.is_file():
            create_markdown_artifact(
                key=artifact_key(figure.key),
                markdown=f"### {figure.title}\n\n{png_markdown(figure.path, figure.title)}\n\nFile: `{figure.path}`",
                description=figure.title,
            )
    for doc in shows.documents:
        if doc.path.is_file():
            text = embed_images(doc.path.read_text(encoding="utf-8"), doc.path.parent)
            create_markdown_artifact(key=artifact_key(doc.key), markdown=text, description=doc.description)
