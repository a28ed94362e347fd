"""The chaos suite's machinery: start and kill the real CLI, snapshot a run, compare it with the
uninterrupted reference.

`CHAOS` is the table of stages under test. Each entry says how to find a kill point inside the
stage and what of its output must match the reference; a new stage is one line there (see
README.md in this folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from mvlp_core import atomic, contract, pipeline, reaper

ROOT = Path(__file__).resolve().parents[2]
MVLP = [sys.executable, "-m", "flows.cli"]
SAMPLES = 36
# pretrain on the demo's 2 Ray Train workers: checkpoints at steps 10, 20 and 30, a metrics row every 2
PRETRAIN_STEPS, CHECKPOINT_EVERY, LOG_EVERY = 30, 10, 2
# small and many-unit: 4 ingest/download/translate/qa/shard units, one align unit per language
OVERRIDES = [
    "models=null",  # one model: the kills are about the stages, not the leaderboard
    "ingest.shard_size=12",
    "languages=[de, fr, ja]",
    "download.timeout=3",  # the world's slow URL stalls 5 s: a timeout reject, with headroom under load
    "download.threads=4",
    "download.processes=1",  # one spawned img2dataset worker: each costs seconds of imports
    "shard.samples_per_shard=10",
    "shard.processes=2",  # its units in worker processes: a kill leaves them writing, the resume cleans up
    f"pretrain.max_steps={PRETRAIN_STEPS}",
    f"pretrain.checkpoint_every={CHECKPOINT_EVERY}",
    f"pretrain.log_every={LOG_EVERY}",
]
RAY_RUN = Path("pretrain", "ray", "pretrain")  # the spec's pretrain.storage_path / run_name
PHASES = ("start", "written", "committed")  # contract.run_units' fault-injection points
RUN_TIMEOUT = 600


# ---------------------------------------------------------------------------- running the CLI


def start_demo(workdir: Path, log: Path, env: dict[str, str] | None = None, *extra: str) -> subprocess.Popen:
    """`mvlp demo` in its own process group (so a kill of the group takes its children too)."""
    full_env = {k: v for k, v in os.environ.items() if k != contract.CHAOS_ENV}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    args = [*MVLP, "demo", "--workdir", str(workdir), "--samples", str(SAMPLES), "--to", LAST_STAGE]
    for item in [*OVERRIDES, *extra]:
        args += ["--set", item]
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-chars:] if log.exists() else ""


def finish(proc: subprocess.Popen, log: Path, timeout: float = RUN_TIMEOUT) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        kill_group(proc)
    assert rc == 0, f"run failed with {rc}:\n{log_tail(log)}"


def session(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`."""
    return reaper.session_members(sid)


def kill_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL the run's process group (img2dataset workers, servers, Ray's head processes), then
    every other process of its session (Ray's workers run in process groups of their own), until
    none is left: nothing of a killed run may still write while the next one runs."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    while alive := session(proc.pid):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.monotonic() < deadline, f"processes of the run outlived SIGKILL: {alive}"
        time.sleep(0.02)
    proc.wait()


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen, log: Path, what: str, timeout: float = RUN_TIMEOUT
) -> None:
    """Poll a condition on the run's files (20 ms) while the run is alive."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"run ended (rc {proc.returncode}) before {what}:\n{log_tail(log)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (psutil is not a dependency)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------------------- kill points


@dataclass(frozen=True)
class KillPoint:
    """Where a run dies: at a contract.run_units fault-injection point (`env`) or, polled from
    outside, once `ready(workdir)` holds (then the test SIGKILLs the process group)."""

    label: str
    env: str | None = None
    ready: Callable[[Path], bool] | None = None


def unit_kill(stage: str, rng: random.Random, ref: contract.Manifest) -> KillPoint:
    """A seeded unit (k of n) and phase: before its work, after its files are written but before
    its record (a complete-looking file without a record), or right after its record."""
    k, phase = rng.randrange(ref.units), rng.choice(PHASES)
    point = f"{stage}:{k}:{phase}"
    return KillPoint(label=point, env=point)


def download_kill(stage: str, rng: random.Random, ref: contract.Manifest) -> KillPoint:
    """Two thirds of the seeds kill img2dataset mid-run (k of n shards finished, its worker
    processes fetching); the others kill at a unit commit point after img2dataset returned."""
    if rng.randrange(3) == 0:
        return unit_kill(stage, rng, ref)
    k = rng.randrange(ref.units)

    def ready(workdir: Path) -> bool:
        folder = workdir / stage
        return (
            (folder / contract.UNITS_DIR / "_fingerprint").exists()
            and (folder / "_input").is_dir()
            and len(list((folder / "webdataset").glob("*_stats.json"))) >= k
        )

    return KillPoint(label=f"download:img2dataset:{k}-shards-done", ready=ready)


def checkpoints(workdir: Path) -> list[int]:
    """Steps of the Ray Train checkpoints on disk under their final names (`checkpoint_STEP`)."""
    folder = workdir / RAY_RUN
    names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    return sorted(int(m[1]) for n in names if (m := re.fullmatch(r"checkpoint_(\d{8})", n)))


def metrics(workdir: Path) -> list[dict]:
    """pretrain/metrics.jsonl's complete rows (the last line may be half-written while it runs)."""
    path = workdir / "pretrain" / "metrics.jsonl"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def pretrain_kill(stage: str, rng: random.Random, ref: contract.Manifest) -> KillPoint:
    """Inside training: once checkpoint k is on disk and metrics.jsonl shows training a seeded
    number of log rows past it (before the next checkpoint), or, for the last checkpoint, between
    the end of training and the stage's commit."""
    at = rng.choice(range(CHECKPOINT_EVERY, PRETRAIN_STEPS + 1, CHECKPOINT_EVERY))
    past = 0 if at == PRETRAIN_STEPS else rng.randrange(1, CHECKPOINT_EVERY // LOG_EVERY) * LOG_EVERY

    def ready(workdir: Path) -> bool:
        return at in checkpoints(workdir) and any(
            r["step"] >= at + past for r in metrics(workdir) if "event" not in r
        )

    return KillPoint(label=f"pretrain:checkpoint-{at}:step-{at + past}", ready=ready)


@dataclass(frozen=True)
class StageChaos:
    """How the suite kills a stage, and which of its outputs must be byte-identical to the
    reference's when its inputs are (`identical(relative path)`). `unseeded`: the stage's output
    legitimately differs between runs (eflomal), so stages reading a re-run of it are compared
    record by record instead of byte by byte."""

    kill: Callable[[str, random.Random, contract.Manifest], KillPoint] = unit_kill
    identical: Callable[[str], bool] = lambda rel: True
    unseeded: bool = False


CHAOS: dict[str, StageChaos] = {
    "ingest": StageChaos(),
    # img2dataset's own tars carry write times; their images are compared through the shards
    "download": StageChaos(kill=download_kill, identical=lambda rel: rel.startswith("samples-")),
    "translate": StageChaos(),
    "align": StageChaos(unseeded=True),
    "qa": StageChaos(),
    "shard": StageChaos(),
    "text-shard": StageChaos(),
    # trained weights differ run to run; what is compared is in check_pretrain
    "pretrain": StageChaos(kill=pretrain_kill, unseeded=True),
}
# In DAG order; runs stop after pretrain (iglue-eval and report are not under test).
STAGES_UNDER_TEST = tuple(name for name in pipeline.names() if name in CHAOS)
LAST_STAGE = STAGES_UNDER_TEST[-1]


# ---------------------------------------------------------------------------- run state


def prepare(live: Path, reference: Path, stage: str) -> None:
    """A workdir where every stage before `stage` is the reference's (complete), the rest absent:
    the run then starts for real at `stage`. Same absolute path as the reference's run, so the
    copied stages' fingerprints hold."""
    if live.exists():
        shutil.rmtree(live)
    live.mkdir(parents=True)
    shutil.copytree(reference / "world", live / "world")
    for name in STAGES_UNDER_TEST:
        if name == stage:
            break
        shutil.copytree(reference / name, live / name)


def unit_records(workdir: Path) -> dict[str, dict[str, bytes]]:
    """Every stage's committed unit records, as bytes."""
    out = {}
    for name in STAGES_UNDER_TEST:
        folder = workdir / name / contract.UNITS_DIR
        out[name] = {p.stem: p.read_bytes() for p in folder.glob("*.json")} if folder.is_dir() else {}
    return out


def leftovers(workdir: Path) -> list[Path]:
    return sorted(workdir.rglob(f"*{atomic.TMP_MARK}*"))


def shard_members(workdir: Path) -> tuple[Counter, dict[str, dict]]:
    """(member name counts, key -> {"jpg": bytes, "json": record}) over the training shards."""
    counts: Counter = Counter()
    out: dict[str, dict] = {}
    for tar_path in sorted((workdir / "shard").glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                counts[m.name] += 1
                key, ext = m.name.split(".", 1)
                data = tar.extractfile(m).read()
                out.setdefault(key, {})[ext] = json.loads(data) if ext == "json" else data
    return counts, out


def align_links(workdir: Path, lang: str) -> dict[str, list[list[int]]]:
    links: dict[str, list[list[int]]] = {}
    for chunk in sorted((workdir / "align").glob(f"{lang}-[0-9]*.parquet")):
        table = pq.read_table(chunk, columns=["key", "links"])
        links.update(zip(table.column("key").to_pylist(), table.column("links").to_pylist()))
    return links


def reject_pairs(folder: Path) -> Counter:
    return Counter((r["key"], r["reason"]) for r in contract.read_rejects(folder).to_pylist())


# ---------------------------------------------------------------------------- the comparison


def check_resumed(
    live: Path,
    reference: Path,
    killed: str,
    before: dict[str, dict[str, bytes]],
    resumed_from: int | None = None,
) -> None:
    """Everything the contract promises after a kill and a re-run, against the reference
    (`resumed_from`: the newest pretrain checkpoint the kill left, if any)."""
    order = list(STAGES_UNDER_TEST)
    ran = {name: order.index(name) >= order.index(killed) for name in order}
    tainted: dict[str, bool] = {}
    for name in order:  # outputs that may legitimately differ: an unseeded stage re-ran upstream
        tainted[name] = ran[name] and (
            CHAOS[name].unseeded or any(tainted[d] for d in pipeline.stage(name).deps)
        )

    assert not leftovers(live), leftovers(live)
    after = unit_records(live)
    for name in order:
        got, want = contract.Manifest.load(live / name), contract.Manifest.load(reference / name)
        assert got is not None, f"{name}: no manifest after the re-run"
        assert got.fingerprint == want.fingerprint, name
        assert got.samples_in == got.samples_out + sum(got.rejects.values()), name
        assert (got.samples_in, got.samples_out, got.rejects) == (
            want.samples_in,
            want.samples_out,
            want.rejects,
        ), name
        assert reject_pairs(live / name) == reject_pairs(reference / name), name
        assert set(got.files) == set(want.files), name
        for rel, info in got.files.items():  # the manifest describes the files on disk
            assert atomic.sha256_file(live / name / rel) == info["sha256"], (name, rel)
            if not tainted[name] and CHAOS[name].identical(rel):
                assert info["sha256"] == want.files[rel]["sha256"], (name, rel)
        for unit, record in before[name].items():  # work committed before the kill is kept
            assert after[name].get(unit) == record, f"{name} unit {unit} was redone or lost"

    counts, got_records = shard_members(live)
    dupes = [m for m, n in counts.items() if n > 1]
    assert not dupes, f"duplicated members: {dupes[:5]}"
    _, want_records = shard_members(reference)
    assert sorted(got_records) == sorted(want_records), "keys lost or added"
    languages = sorted({lang for r in want_records.values() for lang in r["json"]["alignments"]})
    live_links = {lang: align_links(live, lang) for lang in languages} if tainted["align"] else {}
    for key, want in want_records.items():
        got = got_records[key]
        assert set(got) == {"jpg", "json"}, key
        assert got["jpg"] == want["jpg"], f"{key}: image bytes differ"
        g, w = dict(got["json"]), dict(want["json"])
        g_links, w_links = g.pop("alignments"), w.pop("alignments")
        assert g == w, f"{key}: record differs (captions, qa, words, image, source, provenance)"
        assert set(g_links) == set(w_links), key
        for lang, links in g_links.items():
            if tainted["align"]:  # eflomal re-ran: the shard carries this run's links, in bounds
                assert links == live_links[lang][key], (key, lang)
                assert all(
                    0 <= i < len(g["words"]["en"]) and 0 <= j < len(g["words"][lang]) for i, j in links
                ), (key, lang)
            else:
                assert links == w_links[lang], (key, lang)
    check_pretrain(live, reference, resumed_from)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def check_pretrain(live: Path, reference: Path, resumed_from: int | None) -> None:
    """Training resumed at `resumed_from` (None: it had not started when the run was killed), went
    on from there, and ended where the reference did. The weights are unseeded: steps, sample counts
    and the files present are compared, and the model must load."""
    from mvlp_core.model import load_model
    from mvlp_core.train import curves

    rows = metrics(live)
    resumes = [r["step"] for r in rows if r.get("event") == "resume"]
    assert resumes == ([] if resumed_from is None else [resumed_from]), resumes
    if resumed_from is not None:  # every row after the resume continues from that checkpoint
        after = rows[rows.index({"event": "resume", "step": resumed_from}) + 1 :]
        assert [r["step"] for r in after] == list(
            range(resumed_from + LOG_EVERY, PRETRAIN_STEPS + 1, LOG_EVERY)
        ), after
        assert all(r["restored_from"] == resumed_from for r in after), after
    got, want = (contract.Manifest.load(w / "pretrain").extra for w in (live, reference))
    assert got["resumed_at"] == resumes
    assert got["step"] == want["step"] == PRETRAIN_STEPS
    assert got["samples_seen"] == want["samples_seen"]
    assert Path(got["checkpoint"]).name == Path(want["checkpoint"]).name == f"checkpoint_{PRETRAIN_STEPS:08d}"
    assert Path(got["checkpoint"]).parent == live / RAY_RUN and checkpoints(live)[-1] == PRETRAIN_STEPS
    steps = [(r["step"], r["samples"], r["world"]) for r in curves.history(rows)]
    assert steps == [(r["step"], r["samples"], r["world"]) for r in curves.history(metrics(reference))]
    names = [sorted(p.name for p in (w / "pretrain").iterdir()) for w in (live, reference)]
    assert names[0] == names[1], names
    for name in ("init", "final"):
        assert files_under(live / "pretrain" / name) == files_under(reference / "pretrain" / name), name
    assert load_model(live / "pretrain" / "final") is not None


def live_spec(live: Path, server_url: str | None = None):
    """The spec the CLI's runs use, for calling stages in-process (`server_url`: the image server
    standing in for the world's URL host)."""
    from flows.cli import DEMO_SPEC
    from mvlp_core.spec import load_spec

    extra = [f"dataset.samples={SAMPLES}"]
    if server_url:
        extra.append(f"download.mirrors={json.dumps({'http://images.synthetic.mvlp/': server_url})}")
    return load_spec(DEMO_SPEC, [*OVERRIDES, *extra], live)
