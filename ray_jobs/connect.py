"""Start or join Ray the same way for every engine: `execution.ray_address`, else `RAY_ADDRESS`,
else a local Ray started on demand. Workers import the project from the driver's checkout (its
root on PYTHONPATH); their logs stay in Ray's session folder (or the dashboard), not the terminal."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ray

from mvlp_core.spec import PipelineSpec

ROOT = Path(__file__).resolve().parent.parent
# How often a Ray Train controller polls its workers (Ray's default 2 s). Each phase of starting
# and ending a run waits for a poll: on a local Ray a 0.2 s poll makes each `TorchTrainer.fit`
# 3-4 s shorter on 2 cores (15 s -> 11 s with an empty train function) for a few RPCs a second.
# Clusters keep Ray's default (or what their environment sets).
LOCAL_TRAIN_POLL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# A task or actor given no GPU sees none (CUDA_VISIBLE_DEVICES=""), as Ray did before 2.4x: since
# then Ray leaves the variable alone for it unless this is set, so a CPU actor on a GPU node (the
# translate and qa pools' default, `num_gpus: 0`) would see every GPU there and load its model
# onto cuda:0, which Ray never reserved for it. Workers read it: a cluster gets it through the
# job's runtime environment, a local Ray from this process's. A value the user set is kept. (vLLM
# replicas of several GPUs turn it off for their engine actors: mvlp_core/stages/qa/vllm_rows.py.)
ZERO_GPUS_SEE_NONE = ("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")
log = logging.getLogger(__name__)


def connect(spec: PipelineSpec, num_cpus: int | None = None) -> None:
    """Ray for this process; `num_cpus` sizes a local Ray (default: the machine's)."""
    if ray.is_initialized():
        return
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    name, value = ZERO_GPUS_SEE_NONE
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), name: os.environ.get(name, value)}
    address = spec.execution.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        # ray.init refuses a variable the submitted job's runtime env sets too: the job's is kept
        submitted = _submitted_env_vars()
        ours = {k: v for k, v in env.items() if k not in submitted}
        ray.init(address=address, runtime_env={"env_vars": ours}, log_to_driver=False)
        return
    os.environ.update(env)  # local workers inherit the driver's environment
    os.environ.setdefault(*LOCAL_TRAIN_POLL)
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def _submitted_env_vars() -> dict[str, str]:
    """The environment variables of the runtime env this driver's job was submitted with (a
    RayJob's runtimeEnvYAML, `ray job submit --runtime-env-json`), which Ray hands the driver in
    RAY_JOB_CONFIG_JSON_ENV_VAR; none outside a submitted job."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        env_vars = (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}
    return env_vars if isinstance(env_vars, dict) else {}


def warn_if_pool_fills_cluster(what: str, actors: int, cpus_each: float) -> str | None:
    """Ray Data's read tasks need a CPU beside an actor pool: a pool that takes every CPU the
    cluster has now waits for them forever unless the cluster grows. Says so (in the job's log)
    with what to change; returns the warning, or None where there is room."""
    have = ray.cluster_resources().get("CPU", 0.0)
    need = actors * cpus_each
    if have - need >= 1:
        return None
    message = (
        f"{what}: the actor pool takes {need:g} of the cluster's {have:g} CPUs, leaving less than "
        "the one CPU Ray Data's read tasks need: unless the cluster autoscales, the job waits "
        f"forever. Lower {what}.ray.concurrency or {what}.ray.num_cpus, or add CPUs."
    )
    log.warning(message)
    return message
