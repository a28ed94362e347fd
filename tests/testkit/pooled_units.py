"""A unit process that pickles, for the contract's worker-process path (tests/unit/test_contract.py):
it writes `<unit>.json`, notes each run in `runs.log`, and can fail or die on one unit."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mvlp_core import atomic
from mvlp_core.contract import UnitResult


class UnitFailed(RuntimeError):
    pass


@dataclass
class WriteUnit:
    out_dir: Path
    fail_on: str | None = None
    die_on: str | None = None

    def __call__(self, unit: str) -> UnitResult:
        with open(self.out_dir.parent / "runs.log", "a") as log:
            log.write(f"{unit}\n")
        if unit == self.die_on:
            os._exit(3)  # as the kernel's OOM killer ends a worker: no exception, no clean-up
        if unit == self.fail_on:
            raise UnitFailed(f"failing on {unit}")
        atomic.write_json(self.out_dir / f"{unit}.json", {"unit": unit})
        return UnitResult(files={f"{unit}.json": 1}, samples_in=1, samples_out=1, extra={"pid": os.getpid()})
