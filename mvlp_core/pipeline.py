"""The data DAG: stage order, dependencies, folders, and each stage's state on disk.

Plain functions, no orchestrator: flows/ wraps `run_stage` in Prefect flows, `mvlp status` reads
`stage_states`. A stage's expected fingerprint is computed from the spec and its inputs'
manifests, so a stage whose config or upstream changed shows as `stale`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvlp_core import atomic, contract
from mvlp_core.spec import STAGES, PipelineSpec, SpecError

SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class StageDef:
    name: str
    deps: tuple[str, ...]
    module: str  # holds run_<name> (hyphens as _); its package (or module) is the fingerprinted code
    config: str  # name of the function(spec) -> fingerprinted config


DAG: dict[str, StageDef] = {
    "ingest": StageDef("ingest", (), "mvlp_core.stages.ingest", "config"),
    "download": StageDef("download", ("ingest",), "mvlp_core.stages.download", "config"),
    "translate": StageDef("translate", ("download",), "mvlp_core.stages.translate", "fingerprint_inputs"),
    "align": StageDef("align", ("download", "translate"), "mvlp_core.stages.align", "config"),
    "qa": StageDef("qa", ("download",), "mvlp_core.stages.qa", "fingerprint_inputs"),
    "shard": StageDef("shard", ("download", "translate", "align", "qa"), "mvlp_core.stages.shard", "config"),
    "text-shard": StageDef("text-shard", (), "mvlp_core.stages.text_shard", "config"),
    "pretrain": StageDef("pretrain", ("shard", "text-shard"), "mvlp_core.stages.pretrain", "config"),
    "iglue-eval": StageDef("iglue-eval", ("pretrain",), "mvlp_core.stages.iglue_eval", "config"),
    "report": StageDef(
        "report",
        ("ingest", "download", "translate", "align", "qa", "shard", "text-shard", "pretrain", "iglue-eval"),
        "mvlp_core.stages.report",
        "config",
    ),
}
assert tuple(DAG) == STAGES


def stage_dir(spec: PipelineSpec, name: str) -> Path:
    return Path(spec.workdir) / name


def inputs_for(spec: PipelineSpec, name: str) -> dict[str, Path]:
    return {dep: stage_dir(spec, dep) for dep in DAG[name].deps}


def select(start: str | None = None, stop: str | None = None, only: str | None = None) -> list[str]:
    """The stages to run, in DAG order, for --from/--to/--only."""
    for label, value in (("--from", start), ("--to", stop), ("--only", only)):
        if value is not None and value not in DAG:
            raise SpecError(f"{label} {value!r}: unknown stage; allowed: {', '.join(DAG)}")
    if only:
        if start or stop:
            raise SpecError("--only cannot be combined with --from/--to")
        return [only]
    names = list(DAG)
    lo = names.index(start) if start else 0
    hi = names.index(stop) if stop else len(names) - 1
    if lo > hi:
        raise SpecError(f"--from {start} comes after --to {stop} in the DAG ({' -> '.join(names)})")
    return names[lo : hi + 1]


def run_function(name: str) -> str:
    """Stage `a-b` is run by `run_a_b` (hyphens are not valid in Python names)."""
    return "run_" + name.replace("-", "_")


def _module(name: str) -> Any:
    return importlib.import_module(DAG[name].module)


def run_stage(
    spec: PipelineSpec,
    name: str,
    *,
    force: bool = False,
    progress: contract.ProgressFn | None = None,
) -> contract.Manifest:
    run: Callable[..., contract.Manifest] = getattr(_module(name), run_function(name))
    return run(spec, inputs_for(spec, name), stage_dir(spec, name), force=force, progress=progress)


def expected_fingerprint(spec: PipelineSpec, name: str) -> str | None:
    """None when an input stage has no manifest (the stage cannot be current)."""
    mod = _module(name)
    stage_mod = importlib.import_module(f"{DAG[name].module}.stage") if hasattr(mod, "__path__") else mod
    config = getattr(stage_mod, DAG[name].config)(spec)
    extra_code = [importlib.import_module(m) for m in getattr(stage_mod, "CODE_MODULES", ())]
    try:
        return contract.stage_fingerprint(name, config, inputs_for(spec, name), mod, *extra_code)
    except contract.StageError:
        return None


def stage_state(spec: PipelineSpec, name: str) -> dict[str, Any]:
    folder = stage_dir(spec, name)
    manifest = contract.Manifest.load(folder)
    if manifest is None:
        units = list((folder / contract.UNITS_DIR).glob("*.json"))
        return {"state": "partial" if units else "missing", "units_done": len(units)}
    try:
        current = expected_fingerprint(spec, name) == manifest.fingerprint
    except (contract.StageError, SpecError, OSError):
        current = False
    state = {
        "state": "complete" if current else "stale",
        "samples_in": manifest.samples_in,
        "samples_out": manifest.samples_out,
        "rejects": manifest.rejects,
        "seconds": manifest.seconds,
    }
    state.update(manifest.extra)
    return state


def stage_states(spec: PipelineSpec, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    return {name: stage_state(spec, name) for name in (names or list(DAG))}


def save_spec(spec: PipelineSpec) -> None:
    atomic.write_json(Path(spec.workdir) / SPEC_FILE, spec.model_dump(mode="json", by_alias=True))


def load_saved_spec(workdir: Path) -> PipelineSpec:
    path = Path(workdir) / SPEC_FILE
    if not path.exists():
        raise SpecError(
            f"{workdir} holds no run ({SPEC_FILE} missing); start one with `mvlp run` or `mvlp demo`"
        )
    return PipelineSpec.model_validate(json.loads(path.read_text(encoding="utf-8")))
