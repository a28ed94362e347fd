"""`mvlp`: run the DAG (demo or any spec), deploy it to a Prefect server, show stage status,
write the synthetic world, open the UI.

A run whose selected stages are all complete returns before Prefect is even imported, so a
no-op re-run takes seconds; anything else runs as one Prefect parent flow with a child per stage,
in this process or (`--remote`) as a deployment run on a worker, followed from here.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows import cli_align, prefect_api, runlog
from flows.cli_eval import eval_app
from flows.errors import crash, fail, say
from mvlp_core import contract, pipeline, reaper
from mvlp_core.redirect import output_to
from mvlp_core.spec import SPECS_ROOT, PipelineSpec, SpecError, load_spec

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(eval_app, name="eval")
# The console writes to a duplicate of the terminal's fd, so stages that redirect fds 1/2 into
# log files (img2dataset's worker processes) do not swallow the progress bars.
console = Console(file=os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1))
runlog.quiet_environment()
DEMO_SPEC = SPECS_ROOT / "pipelines" / "demo.yaml"
UI_PORT = 4200


STATE_COLOURS = {
    "complete": "green",
    "stale": "yellow",
    "partial": "yellow",
    "missing": "red",  # workdir
    "completed": "green",
    "running": "cyan",
    "pending": "blue",
    "scheduled": "blue",  # Prefect API
    "failed": "red",
    "crashed": "red",
    "cancelled": "magenta",
    "cancelling": "magenta",
    "paused": "yellow",
}


def _status_table(states: dict[str, dict[str, Any]]) -> Table:
    from flows.summary import rejects_text

    table = Table(title="stages")
    for col in ("stage", "state", "in", "out", "rejects by reason", "seconds"):
        table.add_column(col, justify="right" if col in ("in", "out", "seconds") else "left")
    for name, s in states.items():
        table.add_row(
            name,
            f"[{STATE_COLOURS.get(s['state'], 'white')}]{s['state']}[/]",
            str(s.get("samples_in", "")),
            str(s.get("samples_out", "")),
            rejects_text(s.get("rejects", {})),
            f"{s['seconds']:.1f}" if "seconds" in s else "",
        )
    return table


def _print_stale(states: dict[str, dict[str, Any]]) -> None:
    """One line per stale stage: what changed since its output was made."""
    for name, state in states.items():
        if state.get("stale_because"):
            console.print(
                f"[yellow]{name}[/] is stale: " + "; ".join(state["stale_because"]), highlight=False
            )


def _print_jobs(states: dict[str, dict[str, Any]]) -> None:
    """One line per stage a Ray job is writing (mvlp_core.joblock)."""
    for name, state in states.items():
        job = state.get("written_by")
        if job:
            console.print(
                f"[cyan]{name}[/] is being written by Ray job {job['job'] or '(started by hand)'} "
                f"(pid {job['pid']} on {job['host']} since {job['since']})",
                highlight=False,
            )


def _print_outcome(spec: PipelineSpec, states: dict[str, dict[str, Any]], api: str | None) -> None:
    """The stage table, then what each complete stage shows, then where the Prefect UI is (`api`:
    the server the run reported to and that outlives it, if any)."""
    console.print(_status_table(states))
    _print_stale(states)
    for name, state in states.items():
        stage = pipeline.stage(name)
        if stage.shows is not None and state.get("state") == "complete":
            for line in stage.shows(spec, pipeline.stage_dir(spec, name), state).lines:
                console.print(line, highlight=False)
    where = (
        f"open {api.removesuffix('/api')}/runs"
        if api
        else f"run [bold]mvlp ui[/] (or [bold]mvlp ui --background[/], which later runs report to, starting"
        f" sooner) and open http://127.0.0.1:{UI_PORT}/runs"
    )
    console.print(f"Prefect UI: {where} to see this run, its stage runs and their artifacts.")


def _execute(
    spec_path: Path,
    workdir: Path | None,
    overrides: list[str],
    start: str | None = None,
    stop: str | None = None,
    only: str | None = None,
    force: bool = False,
    keep: list[str] | None = None,
) -> None:
    keep = list(keep or [])
    try:
        spec = load_spec(spec_path, overrides, workdir)
        pipeline.check(spec)
        names = pipeline.select(start, stop, only)
        pipeline.check_workdir(spec)
        for name in keep:
            pipeline.stage(name)
    except SpecError as err:
        fail(err)
    states = pipeline.stage_states(spec, names)
    if not force and all(s["state"] == "complete" for s in states.values()):
        console.print(f"[green]All {len(names)} stages complete in {spec.workdir}: nothing to recompute.[/]")
        _print_outcome(spec, pipeline.stage_states(spec), os.environ.get("PREFECT_API_URL"))
        return

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Prefect's ephemeral API server gets 20 s to start by default: too little on a busy 2-core box
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # before anything is started: a killed run takes its workers and servers with it. A process
    # already in the group when the reaper starts is spared (a `tee` of the run's output), so the
    # Prefect server below would outlive a killed run, and the re-run would wait for it in vain
    reaper.reap_children_on_death()
    # before Prefect and the stages are imported: a server this run starts overlaps their imports
    api = prefect_api.choose_api(UI_PORT, runlog.log_path(spec.workdir))
    if api.url is not None and not api.short_lived:
        console.print(f"Reporting to the Prefect server at {api.url}", highlight=False)
    from flows import progress as progress_mod
    from flows.pipeline_flow import data_pipeline

    _import_what_stages_share()
    log = runlog.log_path(spec.workdir)
    try:
        # third-party output to the run's log; the bars and the summary write to the terminal
        with (
            output_to(log),
            Progress(
                TextColumn("{task.description:>10}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as bars,
        ):
            tasks = {n: bars.add_task(n, total=None) for n in names}

            def terminal(stage: str, done: int, total: int) -> None:
                bars.update(tasks[stage], completed=done, total=total)

            progress_mod.set_terminal(terminal)
            try:
                with prefect_api.run_settings(api):
                    data_pipeline(
                        str(spec_path), str(spec.workdir), overrides, start, stop, only, force, keep
                    )
            finally:
                progress_mod.set_terminal(None)
    except (SpecError, contract.StageError) as err:
        fail(f"{err}\n(the libraries' output of this run: {log})")
    _print_outcome(spec, pipeline.stage_states(spec), None if api.short_lived else api.url)
    console.print(f"The libraries' output of this run (Prefect, Ray, img2dataset): {log}", highlight=False)


def _import_what_stages_share() -> None:
    """Import now, while a server this run started is still starting, what every stage imports
    on its first table: pyarrow, and pandas, which pyarrow loads on the first `Table.from_pylist`
    (about 0.3 s on 2 cores, paid after the server answers otherwise)."""
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a spec field: a.b=value")]
KeepOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--keep",
        help="keep this stage's output although the code it runs changed (recorded in its manifest)",
    ),
]


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the run goes")] = Path("runs/demo"),
    samples: Annotated[int | None, typer.Option(help="synthetic images to generate")] = None,
    force: bool = False,
    to: Annotated[str | None, typer.Option(help="last stage (e.g. shard: data only)")] = None,
    set_: SetOpt = None,
    keep: KeepOpt = None,
) -> None:
    """Run the whole DAG on the synthetic world: data, pretraining, IGLUE, report (embedded defaults, one machine)."""
    overrides = list(set_ or [])
    if samples is not None:
        overrides.append(f"dataset.samples={samples}")
    _execute(DEMO_SPEC, workdir, overrides, stop=to, force=force, keep=keep)


@app.command()
def run(
    spec: Path,
    workdir: Path | None = None,
    from_: Annotated[str | None, typer.Option("--from", help="first stage")] = None,
    to: Annotated[str | None, typer.Option(help="last stage")] = None,
    only: Annotated[str | None, typer.Option(help="run this stage alone from its inputs on disk")] = None,
    force: Annotated[bool, typer.Option(help="recompute selected stages even if complete")] = False,
    set_: SetOpt = None,
    keep: KeepOpt = None,
    remote: Annotated[
        bool, typer.Option(help="trigger the deployment (`mvlp deploy`) on PREFECT_API_URL and follow it")
    ] = False,
    poll: Annotated[float, typer.Option(help="--remote: seconds between status reads")] = 2.0,
) -> None:
    """Run a pipeline spec (all stages, or --from/--to/--only), here or on a worker (--remote)."""
    if remote:
        _run_remote(spec, workdir, list(set_ or []), from_, to, only, force, poll, keep)
    else:
        _execute(spec, workdir, list(set_ or []), from_, to, only, force, keep)


def _require_api() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
    if not url:
        fail(
            SpecError(
                "PREFECT_API_URL is not set: start a server (`mvlp ui` or `prefect server start`) and "
                "export PREFECT_API_URL=http://127.0.0.1:4200/api"
            )
        )
    return url


def _run_remote(
    spec_path: Path,
    workdir: Path | None,
    overrides: list[str],
    start: str | None,
    stop: str | None,
    only: str | None,
    force: bool,
    poll: float,
    keep: list[str] | None,
) -> None:
    from flows import deploy, deployment_runs

    try:
        spec = load_spec(spec_path, overrides, workdir)
        pipeline.select(start, stop, only)
    except SpecError as err:
        fail(err)
    api = _require_api()
    params: dict[str, Any] = {
        "spec_path": deploy.spec_param(spec_path),
        "workdir": str(workdir) if workdir else None,
        "overrides": overrides,
        "force": force,
    }
    if keep:
        params["keep"] = list(keep)
    if not only:
        params.update(start=start, stop=stop, only=None)
    name = deploy.deployment_name(spec, only)
    try:
        run = deployment_runs.trigger(name, params)
    except Exception as err:  # noqa: BLE001 - the API's own message says what is missing
        fail(
            SpecError(
                f"could not start deployment {name} on {api}: {err}; register it with `mvlp deploy {spec_path}`"
            )
        )
    console.print(f"Started [bold]{name}[/] flow run {run.name} ({run.id}) on {api}")
    top = _watch(lambda: deployment_runs.run_states(run.id), poll, None)
    console.print(
        f"{name}: [bold]{top.get('state_name', '?')}[/] — UI: {api.removesuffix('/api')}/runs/flow-run/{run.id}"
    )
    if top.get("state") != "completed":
        raise typer.Exit(1)


def _watch(read: Any, interval: float, max_iterations: int | None) -> dict[str, Any]:
    """Refresh a live stage table from `read() -> (run, stages)` until the run is terminal,
    `max_iterations` reads were shown, or Ctrl-C. Returns the last run row."""
    top: dict[str, Any] = {}
    n = 0
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                top, stages = read()
                title = f"{top.get('name', '')} {top.get('state_name', '')}".strip() or "stages"
                table = _status_table(stages)
                table.title = title
                live.update(table)
                n += 1
                if top.get("terminal") or (max_iterations is not None and n >= max_iterations):
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return top


@app.command(name="plan")
def plan_cmd(
    spec: Path,
    workdir: Path | None = None,
    from_: Annotated[str | None, typer.Option("--from", help="first stage")] = None,
    to: Annotated[str | None, typer.Option(help="last stage")] = None,
    only: Annotated[str | None, typer.Option(help="this stage alone")] = None,
    set_: SetOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """What a run would do, before anything runs: each stage's engine, where it runs, its resources,
    the files it reads (sizes) and the models it loads; then every check that needs no compute.
    Exit code 2 when a check fails (each failure one line naming the cause and the fix)."""
    from mvlp_core import plan

    try:
        loaded = load_spec(spec, list(set_ or []), workdir)
        pipeline.check(loaded)
        names = pipeline.select(from_, to, only)
    except SpecError as err:
        fail(err)
    stages = [plan.stage_plan(loaded, name) for name in names]
    found = plan.problems(loaded, names)
    note = plan.world_note(loaded)
    if json_:
        typer.echo(
            json.dumps(
                {
                    "workdir": loaded.workdir,
                    "stages": [vars(s) for s in stages],
                    "problems": found,
                    "note": note,
                },
                indent=2,
            )
        )
    else:
        console.print(f"[bold]plan: {loaded.name}[/] in {loaded.workdir}", highlight=False, soft_wrap=True)
        for s in stages:
            console.print(
                f"[bold]{s.name}[/] ({s.state}): {s.engine} engine, on {s.runs_on}", highlight=False
            )
            if s.resources:
                console.print(f"    needs  {s.resources}", highlight=False, soft_wrap=True)
            for line in s.reads:
                console.print(f"    reads  {line}", highlight=False, soft_wrap=True)
            for line in s.loads:
                console.print(f"    loads  {line}", highlight=False, soft_wrap=True)
        if note:
            console.print(note, highlight=False, soft_wrap=True)
        for line in found:
            console.print(f"[red]problem:[/] {line}", highlight=False, soft_wrap=True)
        if not found:
            console.print(f"[green]All checks pass for {len(names)} stage(s).[/]")
    if found:
        raise typer.Exit(2)


@app.command()
def status(
    workdir: Path = Path("runs/demo"),
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    api: Annotated[
        bool, typer.Option(help="read the latest pipeline run from the Prefect API instead")
    ] = False,
    flow_run: Annotated[str | None, typer.Option(help="--api: this flow run instead of the latest")] = None,
    watch: Annotated[bool, typer.Option(help="refresh until every stage is terminal (Ctrl-C stops)")] = False,
    interval: Annotated[float, typer.Option(help="--watch: seconds between refreshes")] = 2.0,
    max_iterations: Annotated[int | None, typer.Option(help="--watch: stop after N refreshes")] = None,
) -> None:
    """Each stage's state (complete, partial, missing, stale), counts, rejects and seconds, and the
    Ray job writing a stage; with --api, the stage runs of the latest pipeline run and their
    Prefect states."""
    if api:
        from flows import deployment_runs

        _require_api()

        def read() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
            return deployment_runs.run_states(flow_run)
    else:
        try:
            spec = pipeline.load_saved_spec(workdir)
        except SpecError as err:
            fail(err)

        def read() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
            states = pipeline.stage_states(spec)
            done = all(s["state"] == "complete" for s in states.values())
            return {"name": str(spec.workdir), "terminal": done}, states

    if watch:
        _watch(read, interval, max_iterations)
        return
    top, states = read()
    if json_:
        key = {"run": top} if api else {"workdir": str(top["name"])}
        typer.echo(json.dumps({**key, "stages": states}, indent=2, sort_keys=True, default=str))
    else:
        console.print(_status_table(states))
        _print_stale(states)
        _print_jobs(states)


@app.command(name="deploy")
def deploy_cmd(
    spec: Path,
    work_pool: Annotated[
        str, typer.Option(help="work pool the deployments run on (created if missing)")
    ] = "mvlp-local",
    pool_type: Annotated[
        str, typer.Option(help="process (one machine) or kubernetes (the cluster)")
    ] = "process",
    set_: SetOpt = None,
) -> None:
    """Register the pipeline's deployments (end-to-end, on the spec's schedule, and one per stage)
    on the Prefect API in PREFECT_API_URL."""
    from flows import deploy

    if pool_type not in ("process", "kubernetes"):
        fail(SpecError(f"--pool-type {pool_type!r}: allowed: process, kubernetes"))
    overrides = list(set_ or [])
    try:
        loaded = load_spec(spec, overrides)
    except SpecError as err:
        fail(err)
    api = _require_api()
    names = deploy.deploy(loaded, spec, overrides, work_pool, pool_type)
    table = Table(title=f"deployments on {api} (work pool {work_pool}, {pool_type})")
    table.add_column("deployment")
    table.add_column("schedule")
    for n in names:
        table.add_row(
            n, loaded.schedule if n.startswith(deploy.PIPELINE_FLOW) and loaded.schedule else "on demand"
        )
    console.print(table)
    worker = f"prefect worker start --pool {work_pool}" + (
        " --type kubernetes" if pool_type == "kubernetes" else ""
    )
    console.print(f"Start a worker: [bold]{worker}[/]; run: [bold]mvlp run {spec} --remote[/]")


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
def ui(
    port: int = UI_PORT,
    background: Annotated[
        bool,
        typer.Option(
            "--background",
            help="start it detached and return once it answers; later runs report to it instead of"
            " starting a server of their own",
        ),
    ] = False,
    stop: Annotated[bool, typer.Option("--stop", help="stop the server --background started")] = False,
) -> None:
    """Start the Prefect server with its UI (the runs of every mvlp run on this machine)."""
    prefect = [str(Path(sys.executable).parent / "prefect"), "server"]
    if stop:
        raise typer.Exit(subprocess.call([*prefect, "stop"]))
    url = f"http://127.0.0.1:{port}"
    if not background:
        console.print(f"Prefect UI at [bold]{url}[/] (Ctrl-C stops it)")
        raise typer.Exit(subprocess.call([*prefect, "start", "--host", "127.0.0.1", "--port", str(port)]))
    adopted = (
        "runs on this machine report to it and start without a server of their own"
        if port == UI_PORT
        else f"runs report to it with PREFECT_API_URL={url}/api"
    )
    if prefect_api.running_server(port) is not None:
        console.print(f"A Prefect server already answers at [bold]{url}[/]: {adopted}.")
        return
    started = subprocess.run(
        [*prefect, "start", "--background", "--host", "127.0.0.1", "--port", str(port)],
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        fail(f"the Prefect server did not start on port {port}: {started.stdout.strip()[-500:]}")
    prefect_api.wait_for_server(
        port, float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
    )
    console.print(
        f"Prefect UI at [bold]{url}[/], in the background: {adopted}; [bold]mvlp ui --stop[/] stops it."
    )


cli_align.register(app)


def main(argv: list[str] | None = None) -> NoReturn:
    """The `mvlp` command. Every failure is one line on stderr and exit code 2: usage errors, spec
    and stage errors, and unexpected exceptions (whose trace goes to the error log the line names).
    It ends the process."""
    try:
        _command(argv)
    finally:
        # The interpreter's last cyclic collection at exit walks every object Prefect, pydantic and
        # the stages left (a third of a second on 2 cores); frozen, they go with the process, as
        # at any exit. Nothing relies on their finalisers: outputs are fsynced before this point.
        gc.freeze()


def _command(argv: list[str] | None) -> NoReturn:
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="mvlp", standalone_mode=False)
    except typer.exceptions.TyperException as err:  # usage: a bad option, a missing argument
        ctx = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.print(ctx.get_help(), highlight=False)
            raise SystemExit(0) from None
        say(f"{err.format_message()}" + (f" (see {ctx.command_path} --help)" if ctx is not None else ""))
        raise SystemExit(2) from None
    except (typer.Abort, KeyboardInterrupt):
        say("interrupted; a run resumes where it stopped when started again")
        raise SystemExit(130) from None
    except (SpecError, contract.StageError) as err:
        say(err)
        raise SystemExit(2) from None
    except Exception as err:  # noqa: BLE001 - anything else is reported as one line, traced to a log
        crash(err)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
