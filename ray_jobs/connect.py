"""Start or join Ray the same way for every engine: `execution.ray_address`, else `RAY_ADDRESS`,
else a local Ray started on demand. Workers import the project from the driver's checkout (its
root on PYTHONPATH); their logs stay in Ray's session folder (or the dashboard), not the terminal."""

from __future__ import annotations

import os
from pathlib import Path

import ray

from mvlp_core.spec import PipelineSpec

ROOT = Path(__file__).resolve().parent.parent


def connect(spec: PipelineSpec, num_cpus: int | None = None) -> None:
    """Ray for this process; `num_cpus` sizes a local Ray (default: the machine's)."""
    if ray.is_initialized():
        return
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    address = spec.execution.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        return
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # local workers inherit the driver's environment
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
