"""Runs through the Prefect API: trigger a deployment run, and read a pipeline run's stage runs
and their states (for `mvlp run --remote` and `mvlp status --api`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import TERMINAL_STATES, FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from flows.deploy import PIPELINE_FLOW


def trigger(deployment: str, parameters: dict[str, Any]) -> FlowRun:
    """Create a flow run of `flow/deployment` and return at once (a worker picks it up)."""
    from prefect.deployments import run_deployment

    return run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)


def _row(run: FlowRun) -> dict[str, Any]:
    state = run.state
    return {
        "state": state.type.value.lower() if state else "unknown",
        "state_name": state.name if state else "",
        "seconds": round(run.total_run_time.total_seconds(), 1),
        "flow_run_id": str(run.id),
        "terminal": bool(state and state.type in TERMINAL_STATES),
        "message": (state.message or "") if state and state.is_failed() else "",
    }


def latest_pipeline_run(client: SyncPrefectClient) -> FlowRun | None:
    """The pipeline run due last by now: a schedule's future runs, which the server creates ahead
    of time, are not it (a run just triggered, due now and not yet started, is)."""
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[PIPELINE_FLOW])),
        flow_run_filter=FlowRunFilter(
            expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC))
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=1,
    )
    return runs[0] if runs else None


def run_states(flow_run_id: UUID | str | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the run, its stage runs by name) for `flow_run_id`, or for the latest pipeline run.

    A pipeline run's stages are its child flow runs; a single-stage deployment run is its own stage."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(str(flow_run_id))) if flow_run_id else latest_pipeline_run(client)
        if run is None:
            return {}, {}
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])),
            sort=FlowRunSort.START_TIME_ASC,
            limit=200,
        )
        flow_name = client.read_flow(run.flow_id).name
    stages = (
        {c.name: _row(c) for c in children}
        if children or flow_name == PIPELINE_FLOW
        else {run.name: _row(run)}
    )
    return {"name": run.name, "flow": flow_name, **_row(run)}, stages
