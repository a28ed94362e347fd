"""`mvlp eval`: score IGLUE predictions made by any system against the published annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flows.errors import fail
from mvlp_core.eval.io import AnnotationError
from mvlp_core.eval.score import PredictionError, score_file
from mvlp_core.eval.tasks import TASKS

eval_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


@eval_app.command()
def score(
    task: Annotated[str, typer.Option(help=f"one of {', '.join(TASKS)}")],
    annotations: Annotated[Path, typer.Option(help="IGLUE annotation file (test.jsonl, dev.json, ...)")],
    predictions: Annotated[Path, typer.Option(help="predictions JSON (see mvlp_core/eval/score.py)")],
    normalise: Annotated[str, typer.Option(help="xGQA answer normalisation: vqa, lower, none")] = "vqa",
    json_: Annotated[bool, typer.Option("--json", help="print the metrics as JSON (percent)")] = False,
) -> None:
    """Accuracy (xvnli, xgqa, marvl) or Recall@1/5/10 (xflickrco, wit), as IGLUE computes them."""
    try:
        result = score_file(task, annotations, predictions, normalise)
    except (PredictionError, AnnotationError, ValueError) as err:
        fail(err)
    if json_:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    table = Table(title=f"{task}: {annotations.name}")
    table.add_column("metric")
    table.add_column("%", justify="right")
    for name, value in result.items():
        table.add_row(name, f"{value:.2f}")
    console.print(table)
