"""The stage contract: units, rejects, fingerprints and the manifest that marks a stage complete.

Every stage splits its work into units and hands `run_units` one function that turns a unit into
output files. This module owns resuming (finished units are skipped), forcing, the merged
`_rejects.parquet`, the count invariant and `_manifest.json`, so no stage re-implements them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, unit_pool

MANIFEST = "_manifest.json"
REJECTS = "_rejects.parquet"
UNITS_DIR = "_units"
MARKER = "_fingerprint"  # in UNITS_DIR: the fingerprint the units there were made for
BASIS = "_basis"  # in UNITS_DIR: what that fingerprint hashes
ACCEPTED = "_accepted"  # in UNITS_DIR: changes accepted while the units were unfinished
REJECT_SCHEMA = pa.schema(
    [("key", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("unit", pa.string())]
)

ProgressFn = Callable[[int, int, str], None]
# Fault injection for tests/chaos only: "STAGE:INDEX:PHASE" SIGKILLs the process at that point of
# run_units (INDEX: the unit's position in the stage's unit list; PHASE: start, written or
# committed). Unset (always, outside the chaos suite), nothing happens.
CHAOS_ENV = "MVLP_CHAOS_KILL_AT"
log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A run-level failure: the message names the cause and the fix."""


class CountMismatch(StageError):
    """inputs != outputs + rejects: a sample was lost or duplicated."""


@dataclass
class Reject:
    key: str | None
    reason: str
    detail: str = ""


@dataclass
class UnitResult:
    """What one unit produced. `files` maps paths relative to the stage folder to sample counts."""

    files: dict[str, int]
    samples_in: int
    samples_out: int
    rejects: list[Reject] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)  # of files hashed as written; others read back


@dataclass
class Manifest:
    stage: str
    fingerprint: str
    files: dict[str, dict[str, Any]]
    samples_in: int
    samples_out: int
    rejects: dict[str, int]
    seconds: float
    units: int
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    basis: dict[str, Any] = field(default_factory=dict)  # what the fingerprint hashes (fingerprints.Basis)
    accepted: list[dict[str, Any]] = field(default_factory=list)  # changes accepted without recomputing

    def current_for(self, expected: str) -> bool:
        """Whether this output is what `expected` asks for: made for it, or kept for it (`accepted`)."""
        return self.fingerprint == expected or any(a.get("fingerprint") == expected for a in self.accepted)

    def latest_basis(self) -> dict[str, Any]:
        """What the output was last judged current for: the newest acceptance's basis, else its own."""
        return self.accepted[-1]["basis"] if self.accepted and "basis" in self.accepted[-1] else self.basis

    @classmethod
    def load(cls, out_dir: Path) -> Manifest | None:
        path = Path(out_dir) / MANIFEST
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def save(self, out_dir: Path) -> None:
        atomic.write_json(Path(out_dir) / MANIFEST, asdict(self))


def unfinished(out_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """(fingerprint, basis) of work started in `out_dir` and not finished (no manifest yet)."""
    out_dir = Path(out_dir)
    marker = out_dir / UNITS_DIR / MARKER
    if (out_dir / MANIFEST).exists() or not marker.exists():
        return None
    basis_file = out_dir / UNITS_DIR / BASIS
    basis = json.loads(basis_file.read_text(encoding="utf-8")) if basis_file.exists() else {}
    return marker.read_text().strip(), basis


def adopt_unfinished(out_dir: Path, fp: str, basis: dict[str, Any], accepted: dict[str, Any]) -> None:
    """Let unfinished work continue under a new fingerprint (the next run resumes it, not resets
    it); `accepted` says what changed, and ends in the manifest's `accepted`."""
    out_dir = Path(out_dir)
    path = out_dir / UNITS_DIR / ACCEPTED
    earlier = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    atomic.write_json(path, [*earlier, accepted])
    _mark(out_dir, fp, basis)


def _mark(out_dir: Path, fp: str, basis: dict[str, Any] | None) -> None:
    atomic.write_json(out_dir / UNITS_DIR / BASIS, basis or {})
    with atomic.atomic_open(out_dir / UNITS_DIR / MARKER) as f:
        f.write(fp)


def is_complete(out_dir: Path, expected_fingerprint: str) -> bool:
    m = Manifest.load(out_dir)
    return m is not None and m.current_for(expected_fingerprint)


def read_rejects(out_dir: Path) -> pa.Table:
    path = Path(out_dir) / REJECTS
    return pq.read_table(path) if path.exists() else REJECT_SCHEMA.empty_table()


def _reset(out_dir: Path) -> None:
    """Empty the stage folder, keeping the folder itself: it may be a mount point (a volume per
    stage), which cannot be removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _unit_record_path(out_dir: Path, unit: str) -> Path:
    return out_dir / UNITS_DIR / f"{unit}.json"


def _chaos_point(stage: str, index: int, phase: str) -> None:
    if os.environ.get(CHAOS_ENV) == f"{stage}:{index}:{phase}":
        os.kill(os.getpid(), signal.SIGKILL)


def _unit_intact(out_dir: Path, unit: str) -> bool:
    """Whether a committed unit's files are still exactly what its record says (size and sha256):
    a file truncated or changed after its commit must be redone, never read."""
    try:
        record = json.loads(_unit_record_path(out_dir, unit).read_text(encoding="utf-8"))
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not (out_dir / UNITS_DIR / f"{unit}.rejects.parquet").is_file():
        return False
    for rel, info in files.items():
        path = out_dir / rel
        if not path.is_file() or path.stat().st_size != info["bytes"]:
            return False
        if atomic.sha256_file(path) != info["sha256"]:
            return False
    return True


@contextlib.contextmanager
def _disk_errors(stage: str, out_dir: Path) -> Iterator[None]:
    """A full disk is a run-level error: say so, and where, instead of a bare OSError."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StageError(
            f"{stage}: no space left on the device holding {out_dir} ({err}); free space or move "
            "the workdir to a larger disk, then re-run: finished units are kept"
        ) from err


def _in_this_process(
    process: Callable[[str], UnitResult], units: Sequence[str], started: Callable[[str], None]
) -> Iterator[tuple[str, UnitResult, float]]:
    for unit in units:
        t0 = time.perf_counter()
        started(unit)
        result = process(unit)
        yield unit, result, time.perf_counter() - t0


@contextlib.contextmanager
def _worker_deaths(stage: str) -> Iterator[None]:
    """A unit worker process that died (killed, or out of memory) is a run-level error."""
    try:
        yield
    except BrokenProcessPool as err:
        raise StageError(
            f"{stage}: a worker process died while running units ({err}): killed, or out of "
            f"memory (each holds one unit); finished units are kept, so re-run to continue, with "
            f"fewer processes ({stage}.processes in the spec) if memory ran out"
        ) from err


def run_units(
    stage: str,
    out_dir: Path,
    fp: str,
    units: Sequence[str],
    process: Callable[[str], UnitResult],
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    before: Callable[[list[str]], None] | None = None,
    finalize: Callable[[Path, list[dict[str, Any]]], dict[str, Any]] | None = None,
    basis: dict[str, Any] | None = None,
    processes: int = 1,
) -> Manifest:
    """Run the units of a stage that are not done yet, then write the manifest.

    `before(pending)` runs once ahead of the pending units (for engines that process many units in
    one call, such as img2dataset); `finalize(out_dir, unit_records)` returns stage-specific
    figures for the manifest's `extra`; `basis` (what `fp` hashes) is recorded in the manifest.
    With `processes` > 1 and more than one unit pending, units run in that many worker processes
    (`unit_pool`; `process` must then pickle) and are committed here as each finishes.
    """
    out_dir = Path(out_dir)
    if not force and is_complete(out_dir, fp):
        return Manifest.load(out_dir)
    started = time.perf_counter()
    marker = out_dir / UNITS_DIR / MARKER
    if force or not marker.exists() or marker.read_text().strip() != fp:
        _reset(out_dir)
        (out_dir / UNITS_DIR).mkdir()
        _mark(out_dir, fp, basis)
    else:
        (out_dir / MANIFEST).unlink(missing_ok=True)
        atomic.remove_temporaries(out_dir)
        for unit in units:
            record = _unit_record_path(out_dir, unit)
            if record.exists() and not _unit_intact(out_dir, unit):
                log.warning("%s: unit %s's files no longer match its record; redoing it", stage, unit)
                record.unlink()

    if len(set(units)) != len(units):
        raise StageError(f"{stage}: duplicate unit names {sorted(units)}; this is a bug in the stage")
    pending = [u for u in units if not _unit_record_path(out_dir, u).exists()]
    done = len(units) - len(pending)
    if progress:
        progress(done, len(units), "")
    if pending and before:
        with _disk_errors(stage, out_dir):
            before(pending)
    position = {u: i for i, u in enumerate(units)}

    def handed_out(unit: str) -> None:
        _chaos_point(stage, position[unit], "start")

    workers = min(processes, len(pending))
    finished = (
        unit_pool.results(process, pending, workers, handed_out)
        if workers > 1
        else _in_this_process(process, pending, handed_out)
    )
    with _disk_errors(stage, out_dir), _worker_deaths(stage), contextlib.closing(finished):
        for unit, result, seconds in finished:
            _chaos_point(stage, position[unit], "written")
            _commit_unit(out_dir, unit, result, seconds)
            _chaos_point(stage, position[unit], "committed")
            done += 1
            if progress:
                progress(done, len(units), unit)

    records = [json.loads(_unit_record_path(out_dir, u).read_text()) for u in units]
    extra = finalize(out_dir, records) if finalize else {}
    earlier = sum(r["seconds"] for r in records if r["unit"] not in pending)
    seconds = time.perf_counter() - started + earlier
    with _disk_errors(stage, out_dir):
        return _write_manifest(stage, out_dir, fp, units, records, extra, seconds, basis or {})


def _commit_unit(out_dir: Path, unit: str, result: UnitResult, seconds: float) -> None:
    rows = [{"key": r.key, "reason": r.reason, "detail": r.detail, "unit": unit} for r in result.rejects]
    atomic.write_parquet(
        out_dir / UNITS_DIR / f"{unit}.rejects.parquet",
        pa.Table.from_pylist(rows, schema=REJECT_SCHEMA),
    )
    files = {}
    for rel, count in result.files.items():
        path = out_dir / rel
        if not path.exists():
            raise StageError(f"unit {unit} reported {rel} but did not write it; this is a bug")
        files[rel] = {
            "samples": count,
            "sha256": result.sha256.get(rel) or atomic.sha256_file(path),
            "bytes": path.stat().st_size,
        }
    record = {
        "unit": unit,
        "files": files,
        "samples_in": result.samples_in,
        "samples_out": result.samples_out,
        "rejects": len(rows),
        "seconds": round(seconds, 3),
        "extra": result.extra,
    }
    atomic.write_json(_unit_record_path(out_dir, unit), record)


def _accepted_while_unfinished(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / UNITS_DIR / ACCEPTED
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def _merge_rejects(out_dir: Path, units: Sequence[str]) -> Counter[str]:
    """Append every unit's rejects to the stage's `_rejects.parquet`, one unit in memory at a
    time, and count them by reason."""
    reasons: Counter[str] = Counter()
    with atomic.atomic_path(out_dir / REJECTS) as tmp, pq.ParquetWriter(tmp, REJECT_SCHEMA) as writer:
        for u in units:
            table = pq.read_table(out_dir / UNITS_DIR / f"{u}.rejects.parquet").cast(REJECT_SCHEMA)
            writer.write_table(table)
            reasons.update(table.column("reason").to_pylist())
    return reasons


def _write_manifest(
    stage: str,
    out_dir: Path,
    fp: str,
    units: Sequence[str],
    records: list[dict[str, Any]],
    extra: dict[str, Any],
    seconds: float,
    basis: dict[str, Any],
) -> Manifest:
    reasons = _merge_rejects(out_dir, units)
    rejected = sum(reasons.values())
    files: dict[str, dict[str, Any]] = {}
    for rec in records:
        files.update(rec["files"])
    samples_in = sum(r["samples_in"] for r in records)
    samples_out = sum(r["samples_out"] for r in records)
    if samples_in != samples_out + rejected:
        raise CountMismatch(
            f"{stage}: {samples_in} samples in but {samples_out} out + {rejected} rejected; "
            "a sample was lost or duplicated. Re-run with --force; if it persists, report a bug."
        )
    manifest = Manifest(
        stage=stage,
        fingerprint=fp,
        files=files,
        samples_in=samples_in,
        samples_out=samples_out,
        rejects=dict(sorted(reasons.items())),
        seconds=round(seconds, 3),
        units=len(units),
        extra=extra,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        basis=basis,
        accepted=_accepted_while_unfinished(out_dir),
    )
    manifest.save(out_dir)
    return manifest
