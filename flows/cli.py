"""`mvlp`: run the DAG (demo or any spec), show stage status, write the synthetic world, open the UI.

A run whose selected stages are all complete returns before Prefect is even imported, so a
no-op re-run takes seconds; anything else runs as one Prefect parent flow with a child per stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows import cli_align
from flows.cli_eval import eval_app
from mvlp_core import contract, pipeline
from mvlp_core.spec import SPECS_ROOT, SpecError, load_spec

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(eval_app, name="eval")
# The console writes to a duplicate of the terminal's fd, so stages that redirect fds 1/2 into
# log files (img2dataset's worker processes) do not swallow the progress bars.
console = Console(file=os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1))
DEMO_SPEC = SPECS_ROOT / "pipelines" / "demo.yaml"
UI_PORT = 4200


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(2)


def _status_table(states: dict[str, dict[str, Any]]) -> Table:
    from flows.summary import rejects_text

    table = Table(title="stages")
    for col in ("stage", "state", "in", "out", "rejects by reason", "seconds"):
        table.add_column(col, justify="right" if col in ("in", "out", "seconds") else "left")
    colours = {"complete": "green", "stale": "yellow", "partial": "yellow", "missing": "red"}
    for name, s in states.items():
        table.add_row(
            name,
            f"[{colours[s['state']]}]{s['state']}[/]",
            str(s.get("samples_in", "")),
            str(s.get("samples_out", "")),
            rejects_text(s.get("rejects", {})),
            f"{s['seconds']:.1f}" if "seconds" in s else "",
        )
    return table


def _print_outcome(spec_workdir: Path, states: dict[str, dict[str, Any]]) -> None:
    console.print(_status_table(states))
    shard = states.get("shard", {})
    if shard.get("state") == "complete":
        tars = sorted((spec_workdir / "shard").glob("shard-*.tar"))
        console.print(f"Shards: [bold]{spec_workdir / 'shard'}[/] ({len(tars)} tars, {shard['samples_out']} samples)")
    text = states.get("text-shard", {})
    if text.get("state") == "complete" and text.get("samples_in"):
        tars = sorted((spec_workdir / "text-shard").glob("text-*.tar"))
        weights = "; ".join(
            f"{kind} " + ", ".join(f"{k} {q:.2f}" for k, q in text["sampling_weights"][kind].items())
            for kind in ("mono", "parallel") if text["sampling_weights"][kind]
        )
        console.print(f"Text shards: [bold]{spec_workdir / 'text-shard'}[/] ({len(tars)} tars, "
                      f"{text['samples_out']} records); sampling weights (alpha {text['alpha']}): {weights}")
    aer = states.get("align", {}).get("aer")
    if aer:
        console.print("Alignment AER vs gold: " + ", ".join(f"{k} {v:.3f}" for k, v in aer.items()))
    pre = states.get("pretrain", {})
    if pre.get("state") == "complete" and "loss_first" in pre:
        console.print(
            f"Pretrain: {pre['step']} steps, loss {pre['loss_first']:.3f} -> {pre['loss_last']:.3f}; "
            f"model [bold]{pre.get('final')}[/], curve {spec_workdir / 'pretrain' / 'loss_curve.png'}"
        )
    iglue = states.get("iglue-eval", {})
    if iglue.get("state") == "complete":
        console.print("IGLUE (zero-shot, English / avg of the other languages; chance): " + "; ".join(
            f"{task} {r['metric']} {_score(r, 'en')} / {_score(r, 'avg')} ({r['chance']})"
            for task, r in iglue["results"].items()
        ) + f"; tables {spec_workdir / 'iglue-eval' / 'tables'}")
    if states.get("report", {}).get("state") == "complete":
        console.print(f"Report: [bold]{spec_workdir / 'report' / 'report.md'}[/]")
    console.print(
        "Prefect UI: run [bold]mvlp ui[/] and open "
        f"http://127.0.0.1:{UI_PORT}/runs to see this run, its stage runs and their artifacts."
    )


def _score(result: dict, lang: str) -> str:
    """Zero-shot score of one language, or with lang "avg" the average without English."""
    scores = result.get("zero-shot", {})
    if lang == "avg":
        others = [v for k, v in scores.items() if k != "en"]
        return f"{sum(others) / len(others):.1f}" if others else "-"
    return f"{scores[lang]:.1f}" if lang in scores else "-"


def _execute(
    spec_path: Path,
    workdir: Optional[Path],
    overrides: list[str],
    start: Optional[str] = None,
    stop: Optional[str] = None,
    only: Optional[str] = None,
    force: bool = False,
) -> None:
    try:
        spec = load_spec(spec_path, overrides, workdir)
        names = pipeline.select(start, stop, only)
    except SpecError as err:
        _fail(err)
    states = pipeline.stage_states(spec, names)
    if not force and all(s["state"] == "complete" for s in states.values()):
        console.print(f"[green]All {len(names)} stages complete in {spec.workdir}: nothing to recompute.[/]")
        _print_outcome(Path(spec.workdir), pipeline.stage_states(spec))
        return

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows import progress as progress_mod
    from flows.pipeline_flow import data_pipeline

    with Progress(
        TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    ) as bars:
        tasks = {n: bars.add_task(n, total=None) for n in names}

        def terminal(stage: str, done: int, total: int) -> None:
            bars.update(tasks[stage], completed=done, total=total)

        progress_mod.set_terminal(terminal)
        try:
            data_pipeline(str(spec_path), str(spec.workdir), overrides, start, stop, only, force)
        except (SpecError, contract.StageError) as err:
            _fail(err)
        finally:
            progress_mod.set_terminal(None)
    _print_outcome(Path(spec.workdir), pipeline.stage_states(spec))


SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a spec field: a.b=value")]


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the run goes")] = Path("runs/demo"),
    samples: Annotated[Optional[int], typer.Option(help="synthetic images to generate")] = None,
    force: bool = False,
    to: Annotated[Optional[str], typer.Option(help="last stage (e.g. shard: data only)")] = None,
    set_: SetOpt = None,
) -> None:
    """Run the whole DAG on the synthetic world: data, pretraining, IGLUE, report (embedded defaults, one machine)."""
    overrides = list(set_ or [])
    if samples is not None:
        overrides.append(f"dataset.samples={samples}")
    _execute(DEMO_SPEC, workdir, overrides, stop=to, force=force)


@app.command()
def run(
    spec: Path,
    workdir: Optional[Path] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="first stage")] = None,
    to: Annotated[Optional[str], typer.Option(help="last stage")] = None,
    only: Annotated[Optional[str], typer.Option(help="run this stage alone from its inputs on disk")] = None,
    force: Annotated[bool, typer.Option(help="recompute selected stages even if complete")] = False,
    set_: SetOpt = None,
) -> None:
    """Run a pipeline spec (all stages, or --from/--to/--only)."""
    _execute(spec, workdir, list(set_ or []), from_, to, only, force)


@app.command()
def status(
    workdir: Path = Path("runs/demo"),
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Each stage's state (complete, partial, missing, stale), counts, rejects and seconds."""
    try:
        spec = pipeline.load_saved_spec(workdir)
    except SpecError as err:
        _fail(err)
    states = pipeline.stage_states(spec)
    if json_:
        typer.echo(json.dumps({"workdir": str(spec.workdir), "stages": states}, indent=2, sort_keys=True))
    else:
        console.print(_status_table(states))


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="folder for the world")],
    samples: int = 240,
    seed: int = 0,
) -> None:
    """Write the synthetic world: images, URL list, translations, gold alignments, IGLUE sets."""
    from mvlp_core.synth.world import write_world

    info = write_world(out, samples, seed)
    console.print(f"Wrote the synthetic world to [bold]{out}[/]: {json.dumps(info['counts'])}")


@app.command()
def ui(port: int = UI_PORT) -> None:
    """Start the Prefect server with its UI (the runs of every mvlp run on this machine)."""
    console.print(f"Prefect UI at [bold]http://127.0.0.1:{port}[/] (Ctrl-C stops it)")
    raise typer.Exit(
        subprocess.call(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        )
    )


cli_align.register(app)

if __name__ == "__main__":
    app()
