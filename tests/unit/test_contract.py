"""The stage contract (contract.run_units): resume, force, fingerprints, temporaries, rejects and
the count invariant."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.pooled_units import UnitFailed, WriteUnit

from mvlp_core import atomic, contract, unit_pool
from mvlp_core.contract import CountMismatch, Manifest, Reject, UnitResult, run_units

UNITS = ["u0", "u1", "u2"]


class Boom(RuntimeError):
    pass


def make_process(
    out_dir: Path,
    calls: Counter,
    *,
    fail_on: str | None = None,
    fail_times: int = 1,
    rejects: dict[str, list[Reject]] | None = None,
    samples_in_extra: int = 0,
    per_unit: int = 2,
) -> Callable[[str], UnitResult]:
    """A process that writes `<unit>.json` with `per_unit` samples (plus the unit's rejects)."""
    failures = Counter()
    rejects = rejects or {}

    def process(unit: str) -> UnitResult:
        calls[unit] += 1
        if unit == fail_on and failures[unit] < fail_times:
            failures[unit] += 1
            raise Boom(f"failing on {unit}")
        rel = f"{unit}.json"
        atomic.write_json(out_dir / rel, {"unit": unit, "rows": list(range(per_unit))})
        unit_rejects = rejects.get(unit, [])
        return UnitResult(
            files={rel: per_unit},
            samples_in=per_unit + len(unit_rejects) + samples_in_extra,
            samples_out=per_unit,
            rejects=list(unit_rejects),
        )

    return process


def interrupted(
    out: Path,
    calls: Counter,
    fail_on: str,
    *,
    fingerprint: str = "fp1",
    rejects: dict[str, list[Reject]] | None = None,
) -> Callable[[str], UnitResult]:
    """Run UNITS into `out` until the process fails on `fail_on`; returns that process, for the resume."""
    process = make_process(out, calls, fail_on=fail_on, rejects=rejects)
    with pytest.raises(Boom):
        run_units("s", out, fingerprint, UNITS, process)
    return process


def test_full_run_writes_manifest(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    m = run_units("s", out, "fp1", UNITS, make_process(out, calls))
    assert calls == Counter({u: 1 for u in UNITS})
    assert (out / contract.MANIFEST).exists()
    assert m.stage == "s" and m.fingerprint == "fp1"
    assert m.units == 3
    assert m.samples_in == 6 and m.samples_out == 6
    assert m.rejects == {}
    assert set(m.files) == {"u0.json", "u1.json", "u2.json"}
    for rel, info in m.files.items():
        assert info["samples"] == 2
        assert info["sha256"] == atomic.sha256_file(out / rel)
        assert info["bytes"] == (out / rel).stat().st_size
    loaded = Manifest.load(out)
    assert loaded == m
    assert contract.is_complete(out, "fp1")
    assert not contract.is_complete(out, "other")


def test_resume_after_failure_skips_finished_units(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    process = interrupted(out, calls, "u1")
    assert calls == Counter({"u0": 1, "u1": 1})
    assert not (out / contract.MANIFEST).exists()
    assert (out / "u0.json").exists()
    assert not (out / "u1.json").exists()

    m = run_units("s", out, "fp1", UNITS, process)
    # u0 was not re-processed; u1 retried once more; u2 processed once.
    assert calls == Counter({"u0": 1, "u1": 2, "u2": 1})
    assert m.samples_in == 6 and m.samples_out == 6 and m.units == 3
    assert set(m.files) == {"u0.json", "u1.json", "u2.json"}
    assert contract.is_complete(out, "fp1")


def test_resume_with_rejects_keeps_totals(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    rejects = {"u0": [Reject("k0", "bad")], "u2": [Reject("k2", "bad"), Reject(None, "worse")]}
    process = interrupted(out, calls, "u1", rejects=rejects)
    m = run_units("s", out, "fp1", UNITS, process)
    assert calls["u0"] == 1
    assert m.samples_in == 9 and m.samples_out == 6
    assert m.rejects == {"bad": 2, "worse": 1}
    assert contract.read_rejects(out).num_rows == 3


def test_count_mismatch_raises_and_writes_no_manifest(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    process = make_process(out, calls, samples_in_extra=1)  # one sample "lost" per unit
    with pytest.raises(CountMismatch) as info:
        run_units("s", out, "fp1", UNITS, process)
    assert isinstance(info.value, contract.StageError)
    assert "9 samples in" in str(info.value) and "6 out" in str(info.value)
    assert not (out / contract.MANIFEST).exists()
    assert not contract.is_complete(out, "fp1")


def test_complete_stage_is_skipped_and_force_recomputes(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    process = make_process(out, calls)
    first = run_units("s", out, "fp1", UNITS, process)
    mtime = (out / contract.MANIFEST).stat().st_mtime_ns

    def never(unit: str) -> UnitResult:
        raise AssertionError(f"process called for {unit} on a complete stage")

    again = run_units("s", out, "fp1", UNITS, never)
    assert again == first
    assert (out / contract.MANIFEST).stat().st_mtime_ns == mtime

    (out / "junk.txt").write_text("left by someone")
    forced = run_units("s", out, "fp1", UNITS, process, force=True)
    assert calls == Counter({u: 2 for u in UNITS})
    assert forced.samples_in == 6 and forced.samples_out == 6
    assert not (out / "junk.txt").exists()  # force starts from an empty folder
    assert contract.is_complete(out, "fp1")


def test_changed_fingerprint_wipes_stale_partial_outputs(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    interrupted(out, calls, "u1", fingerprint="fp-old")
    (out / "stale-only-in-old.json").write_text("{}")
    assert (out / "u0.json").exists()

    calls_new: Counter = Counter()
    m = run_units("s", out, "fp-new", ["u0", "u1"], make_process(out, calls_new))
    # u0 was finished under the old fingerprint, but must be recomputed under the new one.
    assert calls_new == Counter({"u0": 1, "u1": 1})
    assert not (out / "stale-only-in-old.json").exists()
    assert m.fingerprint == "fp-new"
    assert sorted(p.name for p in (out / contract.UNITS_DIR).glob("*.json")) == [
        "u0.json",
        "u1.json",
    ]
    assert set(m.files) == {"u0.json", "u1.json"}


def test_changed_fingerprint_after_complete_run_recomputes(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    run_units("s", out, "fp1", UNITS, make_process(out, calls))
    m = run_units("s", out, "fp2", ["u0"], make_process(out, calls))
    assert calls == Counter({"u0": 2, "u1": 1, "u2": 1})
    assert set(m.files) == {"u0.json"}
    assert not (out / "u1.json").exists() and not (out / "u2.json").exists()
    assert Manifest.load(out).fingerprint == "fp2"


def test_leftover_temporaries_removed_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    process = interrupted(out, calls, "u1")
    leftovers = [
        out / f"u1.json{atomic.TMP_MARK}deadbeef",
        out / contract.UNITS_DIR / f"u1.json{atomic.TMP_MARK}cafebabe",
        out / "nested" / f"part.parquet{atomic.TMP_MARK}01234567",
        out
        / "nested"
        / f"checkpoint{atomic.TMP_MARK}89abcdef"
        / "model"
        / "weights.bin",  # a folder copy cut short
    ]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half-written")
    run_units("s", out, "fp1", UNITS, process)
    assert (out / "nested").is_dir()
    for p in leftovers:
        assert not p.exists(), p
    assert not list(out.rglob(f"*{atomic.TMP_MARK}*"))
    assert calls["u0"] == 1


def test_copy_tree_lands_whole_under_the_final_name(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "model").mkdir(parents=True)
    (src / "model" / "weights.bin").write_bytes(b"w" * 5000)
    (src / "state.pt").write_bytes(b"s")
    atomic.copy_tree(src, tmp_path / "dest")
    assert sorted(str(p.relative_to(tmp_path / "dest")) for p in (tmp_path / "dest").rglob("*")) == [
        "model",
        "model/weights.bin",
        "state.pt",
    ]
    assert (tmp_path / "dest" / "model" / "weights.bin").read_bytes() == b"w" * 5000
    with pytest.raises(OSError):  # a failed copy leaves neither the final name nor a temporary
        atomic.copy_tree(src, tmp_path / "dest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]


def test_rejects_merged_with_reasons_counted(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    calls: Counter = Counter()
    rejects = {
        "u0": [Reject("k-1", "bad_url", "ftp"), Reject(None, "malformed_row", "3 fields")],
        "u2": [Reject("k-7", "bad_url", "file"), Reject("k-8", "duplicate")],
    }
    m = run_units("s", out, "fp1", UNITS, make_process(out, calls, rejects=rejects))
    assert (out / contract.REJECTS).exists()
    table = contract.read_rejects(out)
    assert table.schema.equals(contract.REJECT_SCHEMA)
    rows = sorted(table.to_pylist(), key=lambda r: (r["unit"], r["reason"]))
    assert rows == [
        {"key": "k-1", "reason": "bad_url", "detail": "ftp", "unit": "u0"},
        {"key": None, "reason": "malformed_row", "detail": "3 fields", "unit": "u0"},
        {"key": "k-7", "reason": "bad_url", "detail": "file", "unit": "u2"},
        {"key": "k-8", "reason": "duplicate", "detail": "", "unit": "u2"},
    ]
    assert m.rejects == {"bad_url": 2, "duplicate": 1, "malformed_row": 1}
    assert m.samples_in == 10 and m.samples_out == 6
    assert m.samples_in == m.samples_out + sum(m.rejects.values())
    on_disk = json.loads((out / contract.MANIFEST).read_text())
    assert on_disk["rejects"] == {"bad_url": 2, "duplicate": 1, "malformed_row": 1}


def test_read_rejects_of_missing_stage_is_empty(tmp_path: Path) -> None:
    table = contract.read_rejects(tmp_path / "nothing")
    assert table.num_rows == 0 and table.schema.equals(contract.REJECT_SCHEMA)


def test_unit_reporting_unwritten_file_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "stage"

    def liar(unit: str) -> UnitResult:
        return UnitResult(files={"missing.json": 1}, samples_in=1, samples_out=1)

    with pytest.raises(contract.StageError, match="missing.json"):
        run_units("s", out, "fp1", ["u0"], liar)
    assert not (out / contract.MANIFEST).exists()


def test_duplicate_unit_names_rejected(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    with pytest.raises(contract.StageError, match="duplicate unit"):
        run_units("s", out, "fp1", ["u0", "u0"], make_process(out, Counter()))


def test_progress_and_finalize(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    seen: list[tuple[int, int, str]] = []

    def finalize(folder: Path, records: list[dict]) -> dict:
        assert folder == out
        return {"units_seen": [r["unit"] for r in records]}

    m = run_units(
        "s",
        out,
        "fp1",
        UNITS,
        make_process(out, Counter()),
        progress=lambda d, t, u: seen.append((d, t, u)),
        finalize=finalize,
    )
    assert seen == [(0, 3, ""), (1, 3, "u0"), (2, 3, "u1"), (3, 3, "u2")]
    assert m.extra == {"units_seen": UNITS}


def test_stage_fingerprint_requires_complete_inputs(tmp_path: Path) -> None:
    from mvlp_core.stage import Stage, Work

    def down(a: int) -> Stage:
        return Stage("down", ("upstream",), config=lambda spec: {"a": a}, plan=lambda ctx: Work([], print))

    with pytest.raises(contract.StageError, match="upstream"):
        down(1).basis(None, {"upstream": tmp_path / "missing"})
    up = tmp_path / "up"
    run_units("up", up, "fpA", ["u0"], make_process(up, Counter()))
    fp1 = down(1).basis(None, {"upstream": up}).fingerprint
    assert fp1 == down(1).basis(None, {"upstream": up}).fingerprint
    assert fp1 != down(2).basis(None, {"upstream": up}).fingerprint
    run_units("up", up, "fpB", ["u0"], make_process(up, Counter()), force=True)
    assert fp1 != down(1).basis(None, {"upstream": up}).fingerprint


@pytest.mark.parametrize("damage", ["truncate", "same_size_change", "delete"])
def test_committed_file_damaged_before_resume_is_redone_not_trusted(tmp_path: Path, damage: str) -> None:
    """A unit whose record exists but whose file no longer matches it (size or sha256) is redone."""
    out = tmp_path / "stage"
    calls: Counter = Counter()
    process = interrupted(out, calls, "u2")
    good = (out / "u0.json").read_bytes()
    victim = out / "u0.json"
    if damage == "truncate":
        victim.write_bytes(good[: len(good) // 2])
    elif damage == "same_size_change":
        victim.write_bytes(good.replace(b"0", b"9", 1))
        assert victim.stat().st_size == len(good)
    else:
        victim.unlink()
    m = run_units("s", out, "fp1", UNITS, process)
    assert calls["u0"] == 2 and calls["u1"] == 1
    assert victim.read_bytes() == good
    assert m.files["u0.json"]["sha256"] == atomic.sha256_file(victim)


def test_out_of_space_is_a_stage_error_naming_the_disk(tmp_path: Path) -> None:
    out = tmp_path / "stage"

    def process(unit: str) -> UnitResult:
        raise OSError(28, "No space left on device", str(out / f"{unit}.json"))

    with pytest.raises(contract.StageError, match=r"s: no space left on the device holding .*stage"):
        run_units("s", out, "fp1", UNITS, process)


CHAOS_SCRIPT = """
import sys
from pathlib import Path
from mvlp_core import atomic
from mvlp_core.contract import UnitResult, run_units
out = Path(sys.argv[1])
def process(unit):
    atomic.write_json(out / f"{unit}.json", {"unit": unit})
    return UnitResult(files={f"{unit}.json": 1}, samples_in=1, samples_out=1)
run_units("s", out, "fp1", ["u0", "u1", "u2"], process)
"""


@pytest.mark.parametrize(
    "point, committed, written",
    [
        (None, 3, 3),
        ("s:1:start", 1, 1),
        ("s:1:written", 1, 2),
        ("s:1:committed", 2, 2),
        ("other:1:start", 3, 3),
    ],
)
def test_chaos_hook_kills_only_at_its_point(
    tmp_path: Path, point: str | None, committed: int, written: int
) -> None:
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "stage"
    env = {k: v for k, v in os.environ.items() if k != contract.CHAOS_ENV}
    if point:
        env[contract.CHAOS_ENV] = point
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", CHAOS_SCRIPT, str(out)], cwd=root, env=env)
    finished = committed == 3
    assert proc.returncode == (0 if finished else -signal.SIGKILL)
    assert len(list((out / contract.UNITS_DIR).glob("u*.json"))) == committed
    assert len(list(out.glob("u*.json"))) == written
    assert (out / contract.MANIFEST).exists() == finished


def test_reset_keeps_the_stage_folder_itself(tmp_path: Path) -> None:
    """A stage folder may be a mount point (a volume per stage): a fresh run empties it in place."""
    out = tmp_path / "stage"
    run_units("s", out, "fp1", UNITS, make_process(out, Counter()))
    (out / "sub").mkdir()
    (out / "sub" / "old.bin").write_bytes(b"x")
    import os

    fd = os.open(out, os.O_RDONLY)  # a handle on this very folder (a recreated one would differ)
    try:
        run_units("s", out, "fp2", UNITS, make_process(out, Counter()))
        assert "_manifest.json" in os.listdir(fd)
    finally:
        os.close(fd)
    assert not (out / "sub").exists()
    assert Manifest.load(out).fingerprint == "fp2"


def _runs(tmp_path: Path) -> Counter:
    return Counter((tmp_path / "runs.log").read_text().split())


SIX = [f"u{i}" for i in range(6)]


def test_units_in_worker_processes_are_committed_as_in_this_one(tmp_path: Path) -> None:
    """processes=2: every unit runs once, in a worker, and the manifest is the one a run in this
    process writes (files, hashes, counts); progress counts each commit."""
    here, pooled = tmp_path / "here" / "out", tmp_path / "pooled" / "out"
    one = run_units("s", here, "fp", SIX, WriteUnit(here))
    seen: list[int] = []
    two = run_units(
        "s", pooled, "fp", SIX, WriteUnit(pooled), processes=2, progress=lambda d, n, u: seen.append(d)
    )
    assert two.files == one.files and (two.samples_in, two.samples_out) == (6, 6)
    assert seen == list(range(7))
    assert _runs(tmp_path / "pooled") == Counter(SIX)
    pids = {json.loads(p.read_text())["extra"]["pid"] for p in (pooled / contract.UNITS_DIR).glob("u*.json")}
    assert pids and os.getpid() not in pids
    assert {
        json.loads(p.read_text())["extra"]["pid"] for p in (here / contract.UNITS_DIR).glob("u*.json")
    } == {os.getpid()}


def test_a_unit_failing_in_a_worker_raises_here_and_the_resume_keeps_committed_units(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UnitFailed, match="failing on u3"):
        run_units("s", out, "fp", SIX, WriteUnit(out, fail_on="u3"), processes=2)
    committed = {p.stem for p in (out / contract.UNITS_DIR).glob("u*.json")}
    assert "u3" not in committed and not (out / contract.MANIFEST).exists()
    manifest = run_units("s", out, "fp", SIX, WriteUnit(out), processes=2)
    assert manifest.samples_out == 6
    runs = _runs(tmp_path)
    assert all(runs[u] == 1 for u in committed) and runs["u3"] == 2


def test_a_worker_that_dies_is_a_stage_error_naming_the_fix(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(contract.StageError, match=r"worker process died.*re-run to continue.*s\.processes"):
        run_units("s", out, "fp", SIX, WriteUnit(out, die_on="u2"), processes=2)
    assert not (out / contract.MANIFEST).exists()


def test_a_worker_ends_itself_once_the_stage_process_is_gone() -> None:
    """A stage process killed outright closes nothing: its workers watch for it and exit."""
    ctx = multiprocessing.get_context("forkserver")
    gone = ctx.Process(target=int)
    gone.start()
    gone.join()
    watcher = ctx.Process(target=unit_pool._exit_without, args=(gone.pid,))
    watcher.start()
    watcher.join(timeout=60)
    assert watcher.exitcode == 1


def test_end_with_runs_the_pools_own_initializer_after_it() -> None:
    """Pools with an initializer of their own (download's fetch guard) keep it: end_with runs it."""
    calls: list[tuple] = []
    unit_pool.end_with(os.getpid(), lambda *args: calls.append(args), "guard", 1)
    assert calls == [("guard", 1)]
