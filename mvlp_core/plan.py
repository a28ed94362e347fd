"""`mvlp plan`: what a run will do before it does anything, and every check that needs no compute.

For each selected stage: its engine and where that runs, the resources it asks for, the files it
reads (with their sizes) and the models it loads (each resolved by path or in the Hugging Face
cache), and its state in the workdir. Then the problems, one line each naming the cause and the
fix: the workdir not writable, and each stage's own checks (`Stage.checks`). `mvlp run` runs the
same checks before any stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

from mvlp_core import contract, pipeline
from mvlp_core.hub import hub_reachable
from mvlp_core.spec import PipelineSpec, SpecError


@dataclass(frozen=True)
class StagePlan:
    name: str
    engine: str
    runs_on: str
    resources: str
    reads: list[str] = field(default_factory=list)  # "path (size)"
    loads: list[str] = field(default_factory=list)  # "name (how it resolves)"
    state: str = ""


def size_of(location: str) -> str:
    """A file's size as people read it, a folder's total, or why it cannot be had. An s3:// or
    gs:// object is asked for its size alone (one request; `storage.info`), and what stops it
    (credentials, access, no bucket) is said in the words of `storage.errors`."""
    from mvlp_core import storage  # here: this function is all of plan.py that object storage touches

    try:
        fs, path = fsspec.core.url_to_fs(location)
        if storage.is_remote(location):
            found = storage.info(location)
            if found is None:
                return "missing"
            if found.get("type") != "directory":
                return human(found.get("size") or 0)
        if fs.isdir(path):
            total = sum(fs.size(f) or 0 for f in fs.find(path))
            return f"folder, {human(total)}"
        return human(fs.size(path) or 0)
    except FileNotFoundError:
        return "missing"
    except contract.StageError as err:
        return f"unreadable: {str(err).removeprefix(location).lstrip(': ')[:160]}"
    except (OSError, ValueError, ImportError) as err:
        return f"unreadable: {' '.join(str(err).split())[:80]}"


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def resolve_model(name: str) -> tuple[bool, str]:
    """(usable, how): a local folder, a Hugging Face name already in the cache, or a name the hub
    supplies at run time when it answers from here (never with HF_HUB_OFFLINE=1)."""
    if Path(name).is_dir():
        return True, "local folder"
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a malformed name is simply not in the cache
        cached = None
    if isinstance(cached, str):
        return True, "in the Hugging Face cache"
    if constants.HF_HUB_OFFLINE:
        return (
            False,
            f"not a local folder and not in the Hugging Face cache ({constants.HF_HUB_CACHE}; HF_HUB_OFFLINE=1)",
        )
    if name.startswith(("/", ".", "~")):
        return False, "a path that does not exist"
    if not hub_reachable():
        return False, (
            f"not a local folder, not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
            f"({constants.ENDPOINT}) is unreachable from here"
        )
    return True, "fetched from the Hugging Face hub at run time"


def _where(spec: PipelineSpec, engine: str) -> str:
    if engine == "local":
        return "this process"
    ex = spec.execution
    if ex.submit == "rayjob":
        return f"a KubeRay RayJob in namespace {ex.rayjob.namespace}"
    if ex.submit == "ray-jobs":
        return f"the Ray Jobs API at {ex.jobs_address}"
    return f"Ray from this process ({ex.ray_address or os.environ.get('RAY_ADDRESS') or 'a local Ray'})"


def stage_plan(spec: PipelineSpec, name: str) -> StagePlan:
    stage = pipeline.stage(name)
    engine = pipeline.engine_of(spec, name)
    needs = stage.needs(spec) if stage.needs is not None else None
    loads = []
    for model in needs.loads if needs else ():
        usable, how = resolve_model(model)
        loads.append(f"{model} ({how})" if usable else f"{model} (NOT USABLE: {how})")
    return StagePlan(
        name=name,
        engine=engine,
        runs_on=_where(spec, engine),
        resources=needs.resources if needs else "",
        reads=[f"{path} ({size_of(path)})" for path in (needs.reads if needs else ())],
        loads=loads,
        state=pipeline.stage_state(spec, name)["state"],
    )


def problems(spec: PipelineSpec, names: list[str]) -> list[str]:
    """Every compute-free check of the selected stages that fails, one line each. Before the
    synthetic world is written, problems about its files are left out (`world_note` says so)."""
    found = []
    try:
        pipeline.check_workdir(spec)
    except SpecError as err:
        found.append(str(err))
    for name in names:
        stage = pipeline.stage(name)
        for model in stage.needs(spec).loads if stage.needs is not None else ():
            usable, how = resolve_model(model)
            if not usable:
                found.append(
                    f"{name}: model {model} is {how}; give a local path, or set HF_HOME to a cache that "
                    f"holds it (fill one with `hf download {model}` where the hub is reachable)"
                )
        if stage.checks is not None:
            found += [f"{name}: {p}" for p in stage.checks(spec)]
    world = _unwritten_world(spec)
    return [line for line in found if world is None or str(world) not in line]


def _unwritten_world(spec: PipelineSpec) -> Path | None:
    world = Path(spec.workdir) / "world"
    return world if spec.dataset.spec.kind == "synthetic" and not world.exists() else None


def world_note(spec: PipelineSpec) -> str | None:
    """For the synthetic world not written yet: why its files show as missing."""
    world = _unwritten_world(spec)
    if world is None:
        return None
    return (
        f"the synthetic world ({world}) is written by `mvlp run`/`mvlp demo`: its files show as missing "
        "and their checks run once it is written"
    )


def require(spec: PipelineSpec, names: list[str]) -> None:
    """StageError (one line) unless every check of the selected stages passes."""
    found = problems(spec, names)
    if found:
        more = f" (and {len(found) - 1} more: `mvlp plan SPEC` lists them)" if len(found) > 1 else ""
        raise contract.StageError(f"{found[0]}{more}")
