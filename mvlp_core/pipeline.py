"""The DAG built from the stage descriptors: order, dependencies, folders, which engine each stage
runs on, and each stage's state on disk (with why it is stale).

Plain functions, no orchestrator: flows/ wraps `run_stage` in Prefect flows, `mvlp status` reads
`stage_states`. A stage's expected fingerprint comes from `Stage.basis`, the same function the
stage runs with, so what status calls current is what a run would skip.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mvlp_core import atomic, contract, fingerprints, joblock, publish, registry, storage
from mvlp_core.spec import PipelineSpec, SpecError
from mvlp_core.spec.loader import check_replaced
from mvlp_core.stage import Stage

SPEC_FILE = "spec.json"


def stages() -> dict[str, Stage]:
    """The registered stages by name, in DAG order (each one's inputs come before it)."""
    found = {s.name: s for s in registry.STAGES}
    for i, stage in enumerate(registry.STAGES):
        late = [d for d in stage.deps if d not in found or list(found).index(d) >= i]
        if late:
            raise SpecError(f"stage {stage.name} depends on {late}, which are not registered before it")
    return found


def stage(name: str) -> Stage:
    known = stages()
    if name not in known:
        raise SpecError(f"unknown stage {name!r}; allowed: {', '.join(known)}")
    return known[name]


def names() -> list[str]:
    return list(stages())


def stage_dir(spec: PipelineSpec, name: str) -> Path:
    return Path(spec.workdir) / name


def inputs_for(spec: PipelineSpec, name: str) -> dict[str, Path]:
    return {dep: stage_dir(spec, dep) for dep in stage(name).deps}


def select(start: str | None = None, stop: str | None = None, only: str | None = None) -> list[str]:
    """The stages to run, in DAG order, for --from/--to/--only."""
    order = names()
    for label, value in (("--from", start), ("--to", stop), ("--only", only)):
        if value is not None and value not in order:
            raise SpecError(f"{label} {value!r}: unknown stage; allowed: {', '.join(order)}")
    if only:
        if start or stop:
            raise SpecError("--only cannot be combined with --from/--to")
        return [only]
    lo = order.index(start) if start else 0
    hi = order.index(stop) if stop else len(order) - 1
    if lo > hi:
        raise SpecError(f"--from {start} comes after --to {stop} in the DAG ({' -> '.join(order)})")
    return order[lo : hi + 1]


def engine_of(spec: PipelineSpec, name: str) -> str:
    """The engine `name` runs on: `execution.engines` where given, else the stage's default."""
    chosen = spec.execution.engines.get(name) or stage(name).default_engine(spec)
    offered = [e.name for e in stage(name).engines]
    if chosen not in offered:
        raise SpecError(
            f"execution.engines.{name}: {chosen!r} is not an engine of {name}; allowed: {', '.join(offered)}"
        )
    return chosen


def check(spec: PipelineSpec) -> None:
    """Spec checks that need the registered stages: every `execution.engines` entry names a stage
    and one of its engines."""
    for name in spec.execution.engines:
        if name not in stages():
            raise SpecError(f"execution.engines.{name}: unknown stage; allowed: {', '.join(names())}")
        engine_of(spec, name)


def check_workdir(spec: PipelineSpec) -> None:
    """SpecError unless the run's workdir can be created and written (before any work starts)."""
    problem = storage.workdir_problem(spec.workdir)
    if problem:
        raise SpecError(problem)
    workdir = Path(spec.workdir)
    probe = workdir / f".mvlp-write-check-{os.getpid()}"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SpecError(
            f"workdir {workdir} cannot be written ({err.strerror or err}); give another with --workdir "
            "or fix its permissions"
        ) from None


def run_stage(spec: PipelineSpec, name: str, **options: Any) -> contract.Manifest:
    """Run one stage from its inputs on disk into its folder. `options` are `Stage.run`'s: force,
    progress, keep, and hook, what the stage's engine provides (None: the local engine;
    `ray_jobs.engines.run_stage` resolves it from the spec). Once the stage is current, its output
    is published where `spec.publish` names a prefix for it (`mvlp_core.publish`: idempotent, so a
    current stage re-run only uploads what the prefix lacks)."""
    manifest = stage(name).run(spec, inputs_for(spec, name), stage_dir(spec, name), **options)
    publish.publish_stage(spec, name, stage_dir(spec, name), manifest)
    return manifest


def expected_fingerprint(spec: PipelineSpec, name: str) -> str | None:
    """The fingerprint `name`'s output must carry to be current; None while an input stage has no
    manifest (the stage cannot be current)."""
    try:
        return stage(name).basis(spec, inputs_for(spec, name)).fingerprint
    except contract.StageError:
        return None


def stage_state(spec: PipelineSpec, name: str) -> dict[str, Any]:
    """complete | stale (with `stale_because`) | partial | missing, the manifest's figures, and
    `written_by` while a Ray job holds the stage (mvlp_core.joblock)."""
    state = _stage_state(spec, name)
    held = joblock.holder(spec.workdir, name)
    if held is not None:
        state["written_by"] = asdict(held)
    return state


def _stage_state(spec: PipelineSpec, name: str) -> dict[str, Any]:
    folder = stage_dir(spec, name)
    manifest = contract.Manifest.load(folder)
    if manifest is None:
        started = contract.unfinished(folder)
        if started is None:
            return {"state": "missing", "units_done": 0}
        state = {"state": "partial", "units_done": len(list((folder / contract.UNITS_DIR).glob("*.json")))}
        try:
            basis = stage(name).basis(spec, inputs_for(spec, name))
        except (contract.StageError, SpecError, OSError):
            return state
        if basis.fingerprint != started[0]:
            why = fingerprints.changes(started[1], basis) or ["its fingerprint differs"]
            state["stale_because"] = [str(c) for c in why]
        return state
    state: dict[str, Any] = {"state": "complete"}
    try:
        basis = stage(name).basis(spec, inputs_for(spec, name))
    except contract.StageError:
        missing = [d for d in stage(name).deps if contract.Manifest.load(stage_dir(spec, d)) is None]
        state.update(state="stale", stale_because=[f"input stage {d} is not complete" for d in missing])
    except (SpecError, OSError) as err:
        state.update(state="stale", stale_because=[f"its fingerprint cannot be computed: {err}"])
    else:
        if not manifest.current_for(basis.fingerprint):
            why = fingerprints.changes(manifest.latest_basis(), basis)
            state.update(state="stale", stale_because=[str(c) for c in why] or ["its fingerprint differs"])
    state.update(
        samples_in=manifest.samples_in,
        samples_out=manifest.samples_out,
        rejects=manifest.rejects,
        seconds=manifest.seconds,
    )
    if manifest.accepted:
        state["accepted"] = manifest.accepted
    state.update(manifest.extra)
    return state


def stage_states(spec: PipelineSpec, selected: list[str] | None = None) -> dict[str, dict[str, Any]]:
    return {name: stage_state(spec, name) for name in (selected or names())}


def save_spec(spec: PipelineSpec) -> None:
    atomic.write_json(Path(spec.workdir) / SPEC_FILE, spec.model_dump(mode="json", by_alias=True))


def load_saved_spec(workdir: Path) -> PipelineSpec:
    problem = storage.workdir_problem(workdir)
    if problem:
        raise SpecError(f"--workdir: {problem}")
    path = Path(workdir) / SPEC_FILE
    if not path.exists():
        raise SpecError(
            f"{workdir} holds no run ({SPEC_FILE} missing); start one with `mvlp run` or `mvlp demo`"
        )
    raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        check_replaced(raw, str(path))
        return PipelineSpec.model_validate(raw)
    except (SpecError, ValidationError) as err:
        raise SpecError(
            f"{path} was written by another version of mvlp ({' '.join(str(err).split())[:200]}); "
            f"run the pipeline again (mvlp run SPEC --workdir {workdir}) to rewrite it"
        ) from None
