"""Which engine runs a stage when a flow runs it: `pipeline.run_stage` (in-process mvlp_core)
unless a stage is mapped here to its distributed entrypoint. mvlp_core never imports ray_jobs,
so this choice lives in flows/ (imports flow flows -> ray_jobs -> mvlp_core)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mvlp_core import contract, pipeline
from mvlp_core.spec import PipelineSpec

Runner = Callable[..., contract.Manifest]


def _pretrain(spec: PipelineSpec, name: str, **kw: Any) -> contract.Manifest:
    from ray_jobs.pretrain import run_stage  # imports ray: only when pretrain runs

    return run_stage(spec, **kw)


RUNNERS: dict[str, Runner] = {"pretrain": _pretrain}


def runner(name: str) -> Runner:
    """A callable with pipeline.run_stage's signature: (spec, name, *, force, progress)."""
    return RUNNERS.get(name, pipeline.run_stage)
