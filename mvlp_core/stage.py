"""One shape for every stage: a `Stage` descriptor in the stage's own module, and `Stage.run`, the
one place that fingerprints a stage, decides whether it is current and drives its units through
`contract.run_units`.

A descriptor says everything the rest of the system needs: the stage's name and input stages, the
config it fingerprints, how it plans its work (units, per-unit work, an optional `before` and
`finalize`), the engines it can run on, whether its output is expensive, and what it shows (plain
data that the CLI summary and the Prefect artifacts render alike). The DAG, the flows, the CLI and
the artifacts read descriptors (`mvlp_core.registry`); adding a stage is one module plus one line
there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mvlp_core import contract, fingerprints
from mvlp_core.spec import PipelineSpec

LOCAL = "local"


@dataclass(frozen=True)
class Engine:
    """Where a stage can run. `local` runs the stage's own code in this process. Any other engine
    names `module:attribute` outside mvlp_core (a `ray_jobs` module, which may import Ray): the
    attribute is handed to the stage's plan as `Context.hook`, and `python -m module` runs the
    stage on that engine as a Ray job (a RayJob entrypoint)."""

    name: str
    hook: str | None = None

    @property
    def module(self) -> str | None:
        return self.hook.split(":", 1)[0] if self.hook else None


def local_or_ray(hook: str) -> tuple[Engine, Engine]:
    """The engines of a stage that runs in this process or on Ray, `hook` naming the Ray one's."""
    return (Engine(LOCAL), Engine("ray", hook))


@dataclass(frozen=True)
class Context:
    """What a stage's plan gets: the spec, its input stages' folders, its own folder, and what the
    chosen engine provides (None on the local engine)."""

    spec: PipelineSpec
    inputs: dict[str, Path]
    out_dir: Path
    hook: Any = None


@dataclass
class Work:
    """A stage's work for `contract.run_units`: its units, what one unit does, and optional hooks.
    `before(pending)` runs once ahead of the pending units, `finalize(out_dir, unit_records)`
    returns the manifest's `extra`, `close()` runs at the end whatever happened (pools, servers).
    With `processes` > 1, units run in that many worker processes: `process` must pickle."""

    units: Sequence[str]
    process: Callable[[str], contract.UnitResult]
    before: Callable[[list[str]], None] | None = None
    finalize: Callable[[Path, list[dict[str, Any]]], dict[str, Any]] | None = None
    close: Callable[[], None] | None = None
    processes: int = 1


@dataclass(frozen=True)
class Table:
    key: str
    description: str
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    path: Path


@dataclass(frozen=True)
class Document:
    """A Markdown file; the figures it links relatively are embedded where it is published."""

    key: str
    description: str
    path: Path


@dataclass(frozen=True)
class Shows:
    """What a complete stage shows beyond its counts: summary lines (the CLI), tables, figures and
    documents (Prefect artifacts)."""

    lines: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    documents: tuple[Document, ...] = ()


ShowsFn = Callable[[PipelineSpec, Path, dict[str, Any]], Shows]


@dataclass(frozen=True)
class Needs:
    """What a stage will read besides its input stages, the models it will load (names or paths)
    and the resources it asks for: shown by `mvlp plan` before anything runs."""

    reads: tuple[str, ...] = ()
    loads: tuple[str, ...] = ()
    resources: str = ""


NeedsFn = Callable[[PipelineSpec], Needs]
# a stage's checks that need no compute (inputs readable, models resolvable, roots present): one
# line per problem, naming the cause and the fix; `mvlp plan` and `mvlp run` run them first
ChecksFn = Callable[[PipelineSpec], list[str]]


def _first_engine(spec: PipelineSpec) -> str:
    return LOCAL


@dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[str, ...]
    config: Callable[[PipelineSpec], dict[str, Any]]
    plan: Callable[[Context], Work]
    engines: tuple[Engine, ...] = (Engine(LOCAL),)
    default_engine: Callable[[PipelineSpec], str] = _first_engine
    expensive: bool = False
    shows: ShowsFn | None = None
    code: tuple[str, ...] = field(default=())  # modules run beyond the plan's and the engines'
    checks: ChecksFn | None = None
    needs: NeedsFn | None = None

    @property
    def code_roots(self) -> tuple[str, ...]:
        engines = tuple(e.module for e in self.engines if e.module)
        return (self.plan.__module__, *engines, *self.code)

    def engine(self, name: str) -> Engine:
        for engine in self.engines:
            if engine.name == name:
                return engine
        allowed = ", ".join(e.name for e in self.engines)
        raise contract.StageError(f"{self.name}: no engine {name!r}; allowed: {allowed}")

    def basis(self, spec: PipelineSpec, inputs: dict[str, Path]) -> fingerprints.Basis:
        """What the stage's output depends on now: its config, its input stages' fingerprints and
        its code. StageError when an input stage is incomplete."""
        upstream = {}
        for dep, folder in sorted(inputs.items()):
            manifest = contract.Manifest.load(folder)
            if manifest is None:
                raise contract.StageError(
                    f"{self.name} needs the output of {dep} ({folder}), which is not complete; "
                    f"run it first (mvlp run SPEC --only {dep}) or run the whole pipeline"
                )
            upstream[dep] = manifest.fingerprint
        return fingerprints.Basis(
            self.name, self.config(spec), upstream, fingerprints.code_hashes(self.code_roots)
        )

    def run(
        self,
        spec: PipelineSpec,
        inputs: dict[str, Path],
        out_dir: Path,
        *,
        force: bool = False,
        progress: contract.ProgressFn | None = None,
        hook: Any = None,
        keep: bool = False,
    ) -> contract.Manifest:
        """Make the stage's output current in `out_dir`; a current output is returned as is.

        Output that is not current is recomputed, except for an expensive stage whose own config
        did not change: work it finished or started under other code or from other inputs is never
        discarded silently. It stops with a StageError naming what changed and both ways forward,
        unless `force` (recompute) or `keep` (keep the output, or continue the unfinished work;
        the manifest records what was accepted)."""
        inputs = {name: Path(folder) for name, folder in inputs.items()}
        missing = [d for d in self.deps if d not in inputs]
        if missing:
            raise contract.StageError(f"{self.name} needs inputs {list(self.deps)}; missing {missing}")
        out_dir = Path(out_dir)
        basis = self.basis(spec, inputs)
        manifest = contract.Manifest.load(out_dir)
        unfinished = contract.unfinished(out_dir)
        if not force and manifest is not None and not manifest.current_for(basis.fingerprint):
            why = _why(manifest.latest_basis(), basis)
            if keep:
                return _accept(manifest, basis, why, out_dir)
            if self.expensive and not any(c.kind == "config" for c in why):
                raise self._stop(why, "its output", "keep it")
        elif not force and manifest is not None:
            return manifest
        elif not force and unfinished is not None and unfinished[0] != basis.fingerprint:
            why = _why(unfinished[1], basis)
            if keep:
                contract.adopt_unfinished(
                    out_dir, basis.fingerprint, basis.record(), _record(unfinished[0], why)
                )
            elif self.expensive and not any(c.kind == "config" for c in why):
                raise self._stop(why, "its unfinished work (checkpoints included)", "continue it")
        work = self.plan(Context(spec, inputs, out_dir, hook))
        try:
            return contract.run_units(
                self.name,
                out_dir,
                basis.fingerprint,
                work.units,
                work.process,
                force=force,
                progress=progress,
                before=work.before,
                finalize=work.finalize,
                basis=basis.record(),
                processes=work.processes,
            )
        finally:
            if work.close is not None:
                work.close()

    def _stop(self, why: list[fingerprints.Change], what: str, keep_it: str) -> contract.StageError:
        changed = "; ".join(str(c) for c in why)
        return contract.StageError(
            f"{self.name}: {what} was made from other inputs or code than it would be now ({changed}); "
            f"{self.name} is expensive, so nothing was discarded and the run stops here. Recompute it: "
            f"mvlp run SPEC --from {self.name} --force; {keep_it}: mvlp run SPEC --keep {self.name} "
            "(recorded in its manifest)"
        )


def _why(recorded: dict[str, Any], basis: fingerprints.Basis) -> list[fingerprints.Change]:
    return fingerprints.changes(recorded, basis) or [
        fingerprints.Change("unknown", "its fingerprint differs")
    ]


def _record(previous: str, why: list[fingerprints.Change]) -> dict[str, Any]:
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "previous_fingerprint": previous,
        "changes": [str(c) for c in why],
    }


def _accept(
    manifest: contract.Manifest, basis: fingerprints.Basis, why: list[fingerprints.Change], out_dir: Path
) -> contract.Manifest:
    """Keep output made by other code or from other inputs: the manifest records that it is current
    for the new fingerprint (and what changed). Its own fingerprint, which later stages depend on,
    stays: keeping a model does not make what was evaluated from it stale."""
    manifest.accepted.append(
        {**_record(manifest.fingerprint, why), "fingerprint": basis.fingerprint, "basis": basis.record()}
    )
    manifest.save(out_dir)
    return manifest
