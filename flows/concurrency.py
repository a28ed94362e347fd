"""Prefect global concurrency limits: one run per workdir at a time, and at most
`cluster.gpu_slots` Ray-backed (GPU) stages at once across all runs on the same Prefect API."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

GPU_LIMIT = "mvlp-gpu-stages"


def workdir_limit(workdir: str) -> str:
    return "mvlp-workdir-" + hashlib.sha256(workdir.encode()).hexdigest()[:16]


@contextmanager
def hold(name: str, limit: int, timeout_seconds: float | None = None) -> Iterator[None]:
    """Take one slot of the global limit `name` (created, or resized, to `limit` first)."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True):
        yield
