"""img2dataset's logger process, forked from the download stage's forkserver instead of spawned.

img2dataset starts its `LoggerProcess` (the per-shard speed and status lines of
`img2dataset.log`) with the spawn method: a fresh interpreter that re-imports img2dataset, torch
among it, while the workers download, and the stage's end waits for it.
The forkserver has imported img2dataset already (`download._worker_context`), so a process forked
from it starts at once and logs the same lines. Imported only when the stage runs (it imports
img2dataset)."""

from __future__ import annotations

from multiprocessing.popen_forkserver import Popen
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from img2dataset.logger import LoggerProcess

from mvlp_core.redirect import output_to


class ForkedLogger(LoggerProcess):
    """`LoggerProcess(*args)` writing to `log` (the forkserver's output is not the stage's)."""

    _start_method = "forkserver"

    def __init__(self, log: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    def run(self) -> None:
        with output_to(self.log):
            super().run()

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Popen:
        return Popen(process_obj)
