"""A stage's units run in worker processes, for `contract.run_units`.

Each worker receives the stage's `process` once (pickled at its start: a picklable callable that
holds what the stage's plan computed) and then unit names; it returns each unit's `UnitResult`
and seconds, and the calling process commits them as they arrive. At most two units per worker
are queued ahead, so a long stage never holds more than a few finished results. Workers fork
from multiprocessing's forkserver, never from the calling process (which runs threads: Prefect's,
Ray's), so they start without its locks; each ends itself once the calling process is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

_process: Callable[[str], Any] | None = None  # in a worker: the stage's process, from _install
_WATCH_SECONDS = 1.0  # how often a worker checks that the stage's process is still there


def end_with(stage_process: int, then: Callable[..., Any] | None = None, *args: Any) -> None:
    """A worker pool's initializer: end this worker once `stage_process` is gone (a stage's
    pools of processes use it: this module's, align's eflomal workers, download's img2dataset
    workers), then run `then(*args)`, the pool's own initializer."""
    threading.Thread(target=_exit_without, args=(stage_process,), daemon=True).start()
    if then is not None:
        then(*args)


def _install(process: Callable[[str], Any], stage_process: int) -> None:
    global _process
    _process = process
    end_with(stage_process)


def _exit_without(stage_process: int) -> None:
    """End this worker once the stage's process is gone: killed outright, it closes nothing, and
    the worker (whose queue keeps its own end of the pipe open) would wait for units forever."""
    while True:
        time.sleep(_WATCH_SECONDS)
        try:
            os.kill(stage_process, 0)
        except ProcessLookupError:
            os._exit(1)


def _run(unit: str) -> tuple[Any, float]:
    assert _process is not None, "a unit-pool worker runs units only after _install"
    t0 = time.perf_counter()
    result = _process(unit)
    return result, time.perf_counter() - t0


def results(
    process: Callable[[str], Any],
    units: Sequence[str],
    processes: int,
    started: Callable[[str], None],
) -> Iterator[tuple[str, Any, float]]:
    """(unit, process(unit), seconds) for each of `units`, as `processes` workers finish them;
    `started(unit)` runs here as each unit is handed out. A unit's exception is raised here (its
    traceback the worker's); a worker that dies raises `BrokenProcessPool`. Leaving the iterator
    early cancels the units not yet started and waits for the running ones."""
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=_install,
        initargs=(process, os.getpid()),
    )
    todo = iter(units)
    position = {unit: i for i, unit in enumerate(units)}
    running: dict[Future, str] = {}

    def hand_out() -> None:
        unit = next(todo, None)
        if unit is not None:
            started(unit)
            running[pool.submit(_run, unit)] = unit

    try:
        for _ in range(2 * processes):
            hand_out()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: position[running[f]]):
                unit = running.pop(future)
                result, seconds = future.result()
                yield unit, result, seconds
                hand_out()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
