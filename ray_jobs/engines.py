"""Run a stage on the engine its spec picks (`execution.engines`, else the stage's default): the
engine's hook, a `ray_jobs` attribute the descriptor names, is imported only when that engine runs
(so local runs never import Ray) and handed to the stage's plan."""

from __future__ import annotations

import importlib
from typing import Any

from mvlp_core import contract, pipeline
from mvlp_core.spec import PipelineSpec


def hook(spec: PipelineSpec, name: str, engine: str | None = None) -> Any:
    """What `engine` (default: the spec's choice) gives the stage's plan; None on `local`."""
    chosen = pipeline.stage(name).engine(engine or pipeline.engine_of(spec, name))
    if chosen.hook is None:
        return None
    module, attribute = chosen.hook.split(":", 1)
    return getattr(importlib.import_module(module), attribute)


def run_stage(
    spec: PipelineSpec, name: str, *, engine: str | None = None, **options: Any
) -> contract.Manifest:
    """Run `name` on `engine` (default: the spec's choice); `options` are `Stage.run`'s."""
    return pipeline.run_stage(spec, name, hook=hook(spec, name, engine), **options)
