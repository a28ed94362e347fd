"""Faults other than killing the pipeline: one img2dataset worker killed alone, a full disk, and an
image server that drops connections mid-body."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from chaos_harness import (
    STAGES_UNDER_TEST,
    check_resumed,
    children,
    cmdline,
    finish,
    kill_group,
    live_spec,
    log_tail,
    prepare,
    start_demo,
    unit_records,
    wait_for,
)

from mvlp_core import atomic, contract, pipeline

pytestmark = pytest.mark.chaos


def started(pid: int) -> int:
    """Start time of a process (clock ticks since boot; field 22 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def download_workers(pid: int) -> list[int]:
    """img2dataset's download worker processes: the children of the pipeline's multiprocessing
    forkserver (the download stage's pool forks its workers there)."""
    servers = [c for c in children(pid) if "forkserver" in cmdline(c)]
    return sorted((w for s in servers for w in children(s)), key=started)


def test_killed_img2dataset_worker_fails_loudly_then_rerun_completes(
    reference: Path, live: Path, chaos_base: Path
) -> None:
    prepare(live, reference, "download")
    log = chaos_base / "worker-kill.log"
    stats = live / "download" / "webdataset"
    n = contract.Manifest.load(reference / "download").units
    proc = start_demo(live, log)
    try:
        wait_for(
            lambda: bool(download_workers(proc.pid)) and len(list(stats.glob("*_stats.json"))) >= 1,
            proc,
            log,
            "an img2dataset worker with one shard done",
        )
        assert len(list(stats.glob("*_stats.json"))) < n, "download finished before the kill"
        victim = download_workers(proc.pid)[0]
        tree = {c: cmdline(c)[:120] for c in children(proc.pid)}
        os.kill(victim, signal.SIGKILL)
        (chaos_base / "worker-kill.victim").write_text(f"victim {victim}\n{tree}\n")
        try:
            rc = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the stage hung after its worker {victim} died:\n{log_tail(log)}")
    finally:
        kill_group(proc)
    out = log_tail(log)
    # either img2dataset's retry absorbed it (rc 0), or the stage says what happened
    assert rc == 0 or (rc == 2 and "img2dataset worker process died" in " ".join(out.split())), out
    assert contract.Manifest.load(live / "download") is None or rc == 0
    before = unit_records(live)
    finish(start_demo(live, log), log)
    check_resumed(live, reference, "download", before)
    shutil.copytree(live, chaos_base / "worker-kill")


def test_full_disk_is_a_clear_error_then_resume_on_a_roomy_disk(
    reference: Path, live: Path, chaos_base: Path
) -> None:
    prepare(live, reference, "shard")
    folder = live / "shard"
    folder.mkdir()
    total = sum(f.stat().st_size for f in (reference / "shard").glob("shard-*.tar"))
    size_kb = max(8, total // 2 // 4096 * 4)  # room for about half the tars
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root or CAP_SYS_ADMIN")
    spec = live_spec(live)
    try:
        with pytest.raises(contract.StageError, match=r"shard: no space left on the device holding .*shard"):
            pipeline.run_stage(spec, "shard")
        assert not (folder / contract.MANIFEST).exists()
        assert not atomic.remove_temporaries(folder), "temporary files left on the full disk"
        finals = sorted(folder.glob("shard-*.tar"))
        for f in finals:  # whatever has a final name is whole (inputs are the reference's)
            assert f.read_bytes() == (reference / "shard" / f.name).read_bytes(), f.name
        committed = unit_records(live)["shard"]
        assert len(committed) < contract.Manifest.load(reference / "shard").units
        kept = chaos_base / "full-disk-shard"
        shutil.copytree(folder, kept)
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    shutil.rmtree(folder)
    shutil.copytree(kept, folder)  # the same files, now on a disk with room
    pipeline.run_stage(spec, "shard")
    assert {u: r for u, r in unit_records(live)["shard"].items() if u in committed} == committed
    got, want = contract.Manifest.load(folder), contract.Manifest.load(reference / "shard")
    assert {f: i["sha256"] for f, i in got.files.items()} == {f: i["sha256"] for f, i in want.files.items()}


def test_connections_dropped_mid_body_become_rejects(reference: Path, live: Path, chaos_base: Path) -> None:
    prepare(live, reference, "ingest")
    urls = live / "world" / "urls.tsv"
    header, *rows = urls.read_text(encoding="utf-8").splitlines()
    assert header.split("\t") == ["caption", "url"]
    dropped = [
        f"a red circle cut short {i}\thttp://images.synthetic.mvlp/bad/drop-mid-body.jpg?n={i}"
        for i in range(3)
    ]
    urls.write_text("\n".join([header, *rows, *dropped]) + "\n", encoding="utf-8")
    log = chaos_base / "drop-mid-body.log"
    finish(start_demo(live, log), log)
    ingest = contract.Manifest.load(live / "ingest")
    keys = [f"synthetic-{len(rows) + i:09d}" for i in range(3)]
    rejects = {r["key"]: r for r in contract.read_rejects(live / "download").to_pylist()}
    for key in keys:
        assert rejects[key]["reason"] == "connection_error", rejects[key]
        assert rejects[key]["detail"], key
    for name in STAGES_UNDER_TEST:
        m = contract.Manifest.load(live / name)
        assert m.samples_in == m.samples_out + sum(m.rejects.values()), name
    assert ingest.samples_out == contract.Manifest.load(reference / "ingest").samples_out + 3
    assert (
        contract.Manifest.load(live / "shard").samples_out
        == contract.Manifest.load(reference / "shard").samples_out
    )
