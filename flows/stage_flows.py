"""One Prefect flow per registered stage: load the spec, run the stage (on its engine here, or as a
Ray job sent to the cluster per `spec.execution`), publish its artifacts.

Flows take the spec path plus `--set` overrides (not a spec object), so the same flows serve
in-process runs and deployments. The work is a task cached on the stage fingerprint (a complete,
current stage is a cache hit whatever the run id; outputs that are not current refresh the
entry), retried with exponential backoff on transient errors (never on StageError/SpecError, which
a retry cannot fix), with results persisted under the run's workdir. A stage flow started on its
own (a deployment, `--only`) holds the workdir's lock; inside the end-to-end flow the parent holds
it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger, task
from prefect.context import FlowRunContext
from prefect.filesystems import LocalFileSystem
from prefect.tasks import exponential_backoff

from flows import concurrency
from flows.artifacts import publish_stage
from flows.progress import stage_progress
from flows.submitted import is_submitted, run_submitted
from mvlp_core import contract, joblock, pipeline, publish
from mvlp_core.spec import PipelineSpec, SpecError, load_spec
from ray_jobs import engines

RESULTS_DIR = ".prefect-results"


def stage_cache_key(spec: PipelineSpec, name: str) -> str | None:
    """stage + workdir + the fingerprint the stage's outputs must carry (config, inputs, code);
    None (no caching) while an input stage has no manifest."""
    expected = pipeline.expected_fingerprint(spec, name)
    if expected is None:
        return None
    prefix = publish.target(spec, name)  # publishing elsewhere is new work for the same output
    key = f"{name}|{spec.workdir}|{expected}" + (f"|publish:{prefix}" if prefix else "")
    return hashlib.sha256(key.encode()).hexdigest()


def result_storage(spec: PipelineSpec) -> LocalFileSystem:
    """The run's result store, `<workdir>/.prefect-results`, saved as a block (Prefect needs
    result storage it can find again from any worker)."""
    path = str(Path(spec.workdir) / RESULTS_DIR)
    storage = LocalFileSystem(basepath=path)
    storage.save("mvlp-results-" + hashlib.sha256(path.encode()).hexdigest()[:16], overwrite=True)
    return storage


def _cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    return stage_cache_key(parameters["spec"], parameters["name"])


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except (contract.StageError, SpecError):
        return False
    except Exception:  # noqa: BLE001 - anything else (I/O, network, a killed worker) may pass on retry
        return True
    return False


@task(
    cache_key_fn=_cache_key,
    persist_result=True,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=_transient,
    task_run_name="run-{name}",
)
def run_stage_task(spec: PipelineSpec, name: str, force: bool = False, keep: bool = False) -> dict[str, Any]:
    # Only jobs sent to the cluster take a GPU slot: a Prefect concurrency lease outlives a killed
    # process (until it expires), so holding one for in-process stages would stall a resumed run.
    if is_submitted(spec, name):
        with concurrency.hold(concurrency.GPU_LIMIT, spec.execution.gpu_slots):
            run_submitted(spec, name, force=force, keep=keep)
    else:
        joblock.refuse_if_held(spec.workdir, name)  # a killed run's job still writing it
        engines.run_stage(spec, name, force=force, progress=stage_progress(name), keep=keep)
    return pipeline.stage_state(spec, name)


def _standalone() -> bool:
    ctx = FlowRunContext.get()
    return ctx is None or ctx.flow_run.parent_task_run_id is None


def _make_stage_flow(name: str) -> Flow:
    @flow(name=name, flow_run_name=f"{name}", validate_parameters=False)
    def stage_flow(
        spec_path: str,
        workdir: str | None = None,
        overrides: list[str] | None = None,
        force: bool = False,
        keep: list[str] | None = None,
    ) -> dict[str, Any]:
        spec = load_spec(spec_path, overrides or [], workdir)
        pipeline.check(spec)
        accept = name in (keep or [])
        # outputs missing, partial or stale (deleted by hand, say), or not yet published where the
        # spec says, refresh the cache entry
        current = pipeline.stage_state(spec, name)["state"] == "complete" and publish.current(
            spec, name, pipeline.stage_dir(spec, name)
        )
        stage_task = run_stage_task.with_options(
            result_storage=result_storage(spec), refresh_cache=force or accept or not current
        )
        if _standalone():
            with concurrency.workdir_lock(spec.workdir):
                state = stage_task(spec, name, force, accept)
        else:
            state = stage_task(spec, name, force, accept)
        publish_stage(name, spec, state)
        get_run_logger().info(
            "%s: %s in, %s out, rejects %s, %ss",
            name,
            state.get("samples_in"),
            state.get("samples_out"),
            state.get("rejects") or "none",
            state.get("seconds"),
        )
        return state

    stage_flow.__name__ = flow_attribute(name)
    return stage_flow


def flow_attribute(name: str) -> str:
    """The module attribute of a stage's flow (`text-shard` -> `text_shard_flow`): the deployments'
    entrypoint `flows.stage_flows.<attribute>`."""
    return f"{name.replace('-', '_')}_flow"


_flows: dict[str, Flow] = {}


def stage_flow(name: str) -> Flow:
    """The flow of a registered stage, made on first use."""
    pipeline.stage(name)  # unknown stages fail here, naming the registered ones
    if name not in _flows:
        _flows[name] = _make_stage_flow(name)
        globals()[flow_attribute(name)] = _flows[name]
    return _flows[name]


# module attributes `<stage>_flow` (ingest_flow, text_shard_flow, ...) for every registered stage
for _name in pipeline.names():
    stage_flow(_name)
