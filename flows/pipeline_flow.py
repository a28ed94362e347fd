"""The end-to-end flow: one parent run, one child flow run per stage.

Before any stage it runs every compute-free check of the selected stages (`mvlp_core.plan`), so a
missing input or an unresolvable model stops the run at once with one line. For the synthetic world
it first writes the world (its own child run), and it serves its images on
127.0.0.1 for the download stage, mapping the world's fixed URL host to the server with
`download.mirrors`, so records keep stable URLs whatever port the server gets. The run holds the
workdir's lock from start to end.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows import concurrency
from flows.stage_flows import stage_flow
from flows.summary import summary_row
from mvlp_core import pipeline, plan
from mvlp_core.imageserver import ImageServer
from mvlp_core.spec import PipelineSpec, load_spec
from mvlp_core.synth.world import ensure_world


@flow(name="synth", flow_run_name="synth")
def synth_flow(out_dir: str, samples: int, seed: int) -> dict[str, Any]:
    return ensure_world(Path(out_dir), samples, seed)


def world_dir(spec: PipelineSpec) -> Path:
    return Path(spec.workdir) / "world"


@flow(name="mvlp-data-pipeline", validate_parameters=False)
def data_pipeline(
    spec_path: str,
    workdir: str | None = None,
    overrides: list[str] | None = None,
    start: str | None = None,
    stop: str | None = None,
    only: str | None = None,
    force: bool = False,
    keep: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    overrides = list(overrides or [])
    spec = load_spec(spec_path, overrides, workdir)
    pipeline.check(spec)
    names = pipeline.select(start, stop, only)
    dataset = spec.dataset.spec
    with contextlib.ExitStack() as stack:
        # two runs never write the same workdir: the second stops with a clear error
        stack.enter_context(concurrency.workdir_lock(spec.workdir))
        if dataset.kind == "synthetic":
            synth_flow(str(world_dir(spec)), spec.dataset.samples, spec.dataset.seed)
        plan.require(spec, names)  # every compute-free check, before any stage (what `mvlp plan` lists)
        if dataset.serve_locally and "download" in names:
            server = stack.enter_context(ImageServer(world_dir(spec)))
            mirror = {dataset.url_prefix: server.url}
            overrides.append(f"download.mirrors={json.dumps(mirror)}")
            spec = load_spec(spec_path, overrides, workdir)
        pipeline.save_spec(spec)
        results = {}
        for name in names:
            results[name] = stage_flow(name)(spec_path, str(spec.workdir), overrides, force, keep)
    create_table_artifact(
        key="pipeline-summary",
        table=[summary_row(n, s) for n, s in pipeline.stage_states(spec).items()],
        description=f"{spec.name}: every stage of {spec.workdir}",
    )
    return results
