"""One Prefect flow per stage: load the spec, run the core stage, publish its figures.

Flows take the spec path plus `--set` overrides (not a spec object), so the same flows serve
in-process runs and deployments.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.artifacts import publish_stage
from flows.progress import stage_progress
from flows.runners import run_stage
from flows.summary import rejects_rows, summary_row
from mvlp_core import pipeline
from mvlp_core.spec import STAGES, load_spec


def _make_stage_flow(name: str) -> Any:
    @flow(name=name, flow_run_name=f"{name}", validate_parameters=False)
    def stage_flow(
        spec_path: str, workdir: str | None = None, overrides: list[str] | None = None, force: bool = False
    ) -> dict[str, Any]:
        spec = load_spec(spec_path, overrides or [], workdir)
        manifest = run_stage(spec, name, force=force, progress=stage_progress(name))
        state = pipeline.stage_state(spec, name)
        create_table_artifact(
            key=f"{name}-summary",
            table=[summary_row(name, state)],
            description=f"{name}: samples in/out, rejects by reason, seconds",
        )
        create_table_artifact(
            key=f"{name}-rejects",
            table=rejects_rows(name, manifest.rejects, manifest.extra.get("filtered")),
            description=f"{name}: rejects by reason",
        )
        publish_stage(name, spec, state)
        get_run_logger().info(
            "%s: %d in, %d out, rejects %s, %.1fs", name, manifest.samples_in,
            manifest.samples_out, manifest.rejects or "none", manifest.seconds,
        )
        return state

    stage_flow.__name__ = f"{name}_flow"
    return stage_flow


STAGE_FLOWS = {name: _make_stage_flow(name) for name in STAGES}
ingest_flow = STAGE_FLOWS["ingest"]
download_flow = STAGE_FLOWS["download"]
translate_flow = STAGE_FLOWS["translate"]
align_flow = STAGE_FLOWS["align"]
qa_flow = STAGE_FLOWS["qa"]
shard_flow = STAGE_FLOWS["shard"]
pretrain_flow = STAGE_FLOWS["pretrain"]
iglue_eval_flow = STAGE_FLOWS["iglue-eval"]
report_flow = STAGE_FLOWS["report"]
