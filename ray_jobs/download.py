"""The download stage's ray engine (`execution.engines.download: ray`): img2dataset's shards run as
Ray tasks across the cluster, each fetching through the fetch guard in the worker process that
runs it.

img2dataset's own ray distributor (`distributor="ray"`) sends each shard to a Ray task that calls
its downloader; `distributor` replaces it (the stage patches it in for the run) with one that
keeps the local engine's guarantees:

- The guard reaches every Ray worker with the task, not with the worker: `fetch_shard` installs
  `fetchguard.install(*guard)` in its worker process, runs `check_guarded` there (img2dataset's own
  download path must reach the installed guard, or the task stops the stage before fetching),
  calls the downloader, and uninstalls the guard when the shard is done. A worker process that
  Ray hands a later task of another kind gets urllib back as it was; a shard never fetches
  unguarded, whichever node and worker runs it, a retried one included. (Ray's runtime_env
  `worker_process_setup_hook` would install the guard for every worker of the job, the other
  stages' included, and only when this process starts Ray.)
- A shard whose downloader reports failure is retried (`max_shard_retry`, img2dataset's retrier);
  a task that raises a StageError (the guard check, a folder the node cannot see) stops the stage
  with its message, and a worker or node that dies mid-shard stops it naming the way on: finished
  shards are kept (the stage commits a unit only once its shard's stats exist).
- `download.processes` shards are fetched at once (Ray tasks of one CPU each, spread over the
  nodes: SPREAD), `download.threads` threads inside each; on an autoscaling cluster that is what
  the stage asks for. The node that fetched each shard is recorded for the stage (`fetched_on`).

img2dataset's input shards, tars and stats live in the stage folder, which every node must see at
the same path (on Kubernetes, the shared volume the run's workdir is on).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from typing import Any

import ray

from mvlp_core import contract, fetchguard
from mvlp_core.spec import PipelineSpec
from mvlp_core.stages.download import Guard, check_guarded
from ray_jobs.connect import connect

Row = tuple[int, str]  # img2dataset's shard: (shard id, its input file)


def fetch_shard(
    downloader: Callable[[Row], tuple[bool, Row]], shard: Row, guard: Guard
) -> tuple[bool, Row, str]:
    """One img2dataset shard in this worker process, through the fetch guard: (status, shard,
    the Ray node id). The guard is installed for this shard only and checked before any fetch."""
    node = ray.get_runtime_context().get_node_id()
    folder = getattr(downloader, "output_folder", None)
    if folder and "://" not in folder and not os.path.isdir(folder):
        raise contract.StageError(
            f"download (ray): Ray node {node} cannot see the stage folder {folder}; every node must "
            "see the run's workdir at the same path (a shared volume), or run download on the local "
            "engine (execution.engines.download: local)"
        )
    fetchguard.install(*guard)
    try:
        check_guarded()
        status, row = downloader(shard)
    finally:
        fetchguard.uninstall()
    return status, row, node


_fetch_shard = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(fetch_shard)


def _result(ref: ray.ObjectRef) -> tuple[bool, Row, str]:
    """A task's result; a StageError for a task that failed, naming what to do."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, contract.StageError):
            raise contract.StageError(str(err.cause)) from None
        raise contract.StageError(
            f"download (ray): an img2dataset shard task failed ({type(err.cause).__name__}: "
            f"{str(err.cause)[:300]}); re-run the stage: finished shards are kept"
        ) from None
    except ray.exceptions.RayError as err:
        raise contract.StageError(
            f"download (ray): a Ray worker or node died mid-shard ({type(err).__name__}); re-run "
            "the stage: finished shards are kept, the others are fetched again"
        ) from None


def distributor(spec: PipelineSpec, guard: Guard, fetched_on: dict[int, str]) -> Callable[..., None]:
    """img2dataset's distributor for this stage run on the Ray cluster of `spec` (joined now):
    each shard a guarded Ray task; `fetched_on` gets shard id -> the node that fetched it."""
    from img2dataset.distributor import retrier

    connect(spec)

    def run_shards(processes_count: int, downloader: Any, reader: Iterable[Row], _subjob: int, retries: int):
        loader = ray.put(downloader)

        def run(shards: Iterable[Row]) -> list[Row]:
            todo, running, failed = iter(shards), [], []
            try:
                while True:
                    running += [
                        _fetch_shard.remote(loader, shard, guard)
                        for shard in itertools.islice(todo, max(0, processes_count - len(running)))
                    ]
                    if not running:
                        return failed
                    done, running = ray.wait(running, num_returns=1)
                    status, row, node = _result(done[0])
                    if status:
                        fetched_on[row[0]] = node
                    else:
                        failed.append(row)
            finally:
                for ref in running:  # the stage stops: leave no shard fetching behind it
                    ray.cancel(ref, force=True)

        retrier(run, run(reader), retries)

    return run_shards
