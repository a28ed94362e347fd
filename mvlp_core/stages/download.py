"""download: ingest shards -> images in WebDataset tars, through img2dataset.

img2dataset does the fetching, resizing and tar writing (reader/downloader/resizer/writer); this
module feeds it one input file per ingest shard so that img2dataset shard N is ingest unit N,
carries our keys through `save_additional_columns`, maps its per-sample statuses to reject
reasons, and commits a unit only after img2dataset has written that shard's `_stats.json` (which it
writes after closing the tar), so a tar left by a killed run is redone, never read.

Every fetch goes through `mvlp_core.fetchguard`, installed in each worker, with the per-host limits
of `download.per_host_*` and `busy_retries`. Before the first shard, `check_guarded` drives
img2dataset's own downloader in a worker and stops the stage if the request did not reach the
guard (an img2dataset release that fetches some other way), rather than fetching unguarded.
img2dataset honours X-Robots-Tag (`download.opt_out_directives`, addressed to nobody or to
`download.user_agent_token`): such an image is an `opt_out` reject.

Engines: `local` runs img2dataset's shards in a worker pool of this machine; `ray`
(`execution.engines.download: ray`, `ray_jobs.download`) runs each shard as a Ray task on the
cluster, the guard installed and checked in the task's worker process. Only where shards are
fetched changes: units, commits (after a shard's stats exist) and rejects are this module's either
way, and a unit fetched on Ray records the Ray node it was fetched on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
import math
import multiprocessing
import multiprocessing.forkserver
import os
import re
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, contract, fetchguard, tarstream, unit_pool, urlpolicy
from mvlp_core.redirect import output_to
from mvlp_core.spec import DownloadSpec, PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Needs, Stage, Work, local_or_ray

WDS_DIR = "webdataset"
INPUT_DIR = "_input"
KEY_COLUMN = "mvlp_key"
SAMPLES_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("row", pa.int64()),
        *((c, pa.string()) for c in ("url", "caption", "tar", "member")),
        *((c, pa.int32()) for c in ("width", "height")),
    ]
)

# the request img2dataset's downloader is sent to by `check_guarded`: port 0 of loopback, which the
# kernel refuses before a byte is sent, guarded or not
PROBE_URLS = ("http://127.0.0.1:0/mvlp-fetch-guard-probe", "https://127.0.0.1:0/mvlp-fetch-guard-probe")

# img2dataset error text -> reject reason (first match wins)
_ERROR_REASONS = [
    (re.compile(fetchguard.BLOCK_PHRASE + r": (\w+)"), lambda m: m.group(1)),
    # img2dataset's text when a header refuses the image (downloader.is_disallowed)
    (re.compile(r"disallowed by X-Robots-Tag"), lambda m: "opt_out"),
    (re.compile(r"HTTP Error (\d{3})"), lambda m: f"http_{m.group(1)}"),
    (re.compile(r"timed out|timeout", re.I), lambda m: "timeout"),
    (
        re.compile(r"area too large|decompression|validateInputImageSize|CV_IO_MAX_IMAGE", re.I),
        lambda m: "image_too_large",
    ),
    (
        re.compile(r"cannot identify image|image file is truncated|decod", re.I),
        lambda m: "image_decode_error",
    ),
    (re.compile(r"image too small", re.I), lambda m: "image_too_small"),
    (re.compile(r"aspect ratio", re.I), lambda m: "image_aspect_ratio"),
    (
        re.compile(r"Connection|refused|reset|Name or service|urlopen error|IncompleteRead", re.I),
        lambda m: "connection_error",
    ),
]


# the guard a worker installs: fetchguard.install's arguments
Guard = tuple[Any, int, int, float | None, fetchguard.HostLimits]
# the ray engine's hook (`ray_jobs.download.distributor`): given the spec, the guard and a dict it
# fills with shard -> the node that fetched it, an img2dataset distributor
# (processes_count, downloader, reader, subjob_size, max_shard_retry) -> None
RemoteDistributor = Callable[[PipelineSpec, Guard, dict[int, str]], Callable[..., None]]


def error_reason(message: str | None, status: str) -> str:
    text = message or ""
    for pattern, reason in _ERROR_REASONS:
        m = pattern.search(text)
        if m:
            return reason(m)
    return "resize_error" if status == "failed_to_resize" else "download_error"


def effective_url(url: str, mirrors: dict[str, str]) -> str:
    """The URL actually fetched: the longest matching mirror prefix rewritten."""
    for prefix in sorted(mirrors, key=len, reverse=True):
        if url.startswith(prefix):
            return mirrors[prefix] + url[len(prefix) :]
    return url


def config(spec: PipelineSpec) -> dict[str, Any]:
    return {
        "download": fingerprint_config(spec.download),
        "url_policy": fingerprint_config(spec.ingest.url_policy),
    }


def _units(ingest_dir: Path) -> list[str]:
    manifest = contract.Manifest.load(ingest_dir)
    return sorted(m.group(1) for f in manifest.files if (m := re.fullmatch(r"shard-(\d{5})\.parquet", f)))


def _write_inputs(
    spec: PipelineSpec, ingest_dir: Path, out_dir: Path, units: list[str]
) -> tuple[dict[str, int | None], dict[str, list[contract.Reject]]]:
    """Write img2dataset's input files (all units, so shard ids line up) and return each unit's
    img2dataset shard id (None when no row of the unit may be fetched) and pre-fetch rejects."""
    shard_of: dict[str, int | None] = {}
    blocked: dict[str, list[contract.Reject]] = {}
    next_shard = 0
    for unit in units:
        table = pq.read_table(ingest_dir / f"shard-{unit}.parquet")
        rows, blocked[unit] = [], []
        for rec in table.to_pylist():
            url = effective_url(rec["url"], spec.download.mirrors)
            verdict = urlpolicy.check_url(url, spec.ingest.url_policy)
            if verdict:
                blocked[unit].append(contract.Reject(rec["key"], verdict[0], f"{url}: {verdict[1]}"))
            else:
                rows.append({"url": url, "caption": rec["caption"], KEY_COLUMN: rec["key"]})
        atomic.write_parquet(
            out_dir / INPUT_DIR / f"{unit}.parquet",
            pa.Table.from_pylist(
                rows,
                schema=pa.schema([("url", pa.string()), ("caption", pa.string()), (KEY_COLUMN, pa.string())]),
            ),
        )
        n_shards = math.ceil(len(rows) / spec.ingest.shard_size)
        shard_of[unit] = next_shard if n_shards else None
        next_shard += n_shards
    return shard_of, blocked


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a forkserver that imported img2dataset once (3.4 s of imports, torch
    among them): spawned workers paid that each, at every run; forking the stage's own process
    instead would copy its threads' locks (Prefect's, the image server's) into the children.
    The forkserver lives as long as this process and its children keep the environment it
    started with: settings reach the workers as arguments (the initializer's), not env vars."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["img2dataset", "mvlp_core.fetchguard"])
    return ctx


def _distributor(processes_count, downloader, reader, _subjob_size, max_shard_retry, *, guard: tuple) -> None:
    """img2dataset's multiprocessing distributor, on ProcessPoolExecutor instead of
    multiprocessing.Pool: when a worker dies (SIGKILL, OOM killer) Pool never returns its shard
    and the stage hangs forever; the executor breaks loudly, and finished shards are kept. Each
    worker fetches through `fetchguard.install(*guard)`'s opener; `check_guarded` runs in one of
    them before any shard.

    No `max_tasks_per_child` (img2dataset's Pool recycles workers every 5 shards): an executor
    whose workers all exit at that limit never replaces them and waits forever (CPython
    gh-115634, Python 3.11 up to the fix's backports) — a run of more than processes x 5 shards
    hung. Workers therefore live for the whole stage; a worker that leaks memory is not recycled."""
    from img2dataset.distributor import retrier

    with ProcessPoolExecutor(
        processes_count,
        mp_context=_worker_context(),
        initializer=unit_pool.end_with,  # a worker ends when this process is killed, then guards
        initargs=(os.getpid(), fetchguard.install, *guard),
    ) as pool:
        pool.submit(check_guarded).result()  # a StageError from the worker stops the stage here

        def run(shards) -> list:
            futures = [pool.submit(downloader, shard) for shard in shards]
            try:
                return [row for f in as_completed(futures) for status, row in [f.result()] if not status]
            except BrokenProcessPool:
                raise contract.StageError(
                    "download: an img2dataset worker process died mid-shard (killed, or out of "
                    "memory); re-run the stage: finished shards are kept, the others are fetched again"
                ) from None

        retrier(run, run(reader), max_shard_retry)


def check_guarded(download_image: Callable[..., Any] | None = None) -> None:
    """Raise a StageError unless img2dataset's own `downloader.download_image` (or the stand-in
    `download_image`) fetches through the fetch guard installed in this process: it is sent to
    `PROBE_URLS` and the guard must have counted each request. Whatever img2dataset does (a
    different urllib call, another HTTP library), a download path the guard does not see stops the
    stage instead of fetching unguarded."""
    from img2dataset import downloader

    fetch = download_image or downloader.download_image
    version = importlib.metadata.version("img2dataset")
    fix = "install the img2dataset version pyproject.toml pins (pip install -e .)"
    for url in PROBE_URLS:
        seen = fetchguard.requests_seen()
        try:
            _download_one(fetch, url)
        except TypeError as err:
            raise contract.StageError(
                f"download: cannot check that img2dataset {version} fetches through the fetch guard: "
                f"its downloader.download_image takes other arguments ({err}); {fix}"
            ) from None
        if fetchguard.requests_seen() == seen:
            raise contract.StageError(
                f"download: img2dataset {version} fetched {url} past the fetch guard, so the URL "
                f"policy, deadlines, size and host limits would not hold; {fix}"
            )


def _download_one(download_image: Callable[..., Any], url: str) -> None:
    """Call img2dataset's `download_image(row, timeout, ...)` for `url`, whatever parameters its
    version adds after those two (user agent, X-Robots-Tag directives, SSL options): None each."""
    params = {name: None for name in inspect.signature(download_image).parameters}
    download_image(**{**params, "row": (0, url), "timeout": 1})


def _host_limits(d: DownloadSpec) -> fetchguard.HostLimits:
    return fetchguard.HostLimits(
        connections=d.per_host_connections,
        requests_per_second=d.per_host_requests_per_second,
        busy_retries=d.busy_retries,
        max_retry_after=d.max_retry_after,
    )


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


@contextlib.contextmanager
def _logger_stopped_on_error():
    """img2dataset joins its logger process only when it succeeds; on an error stop it here, or it
    keeps polling until this process exits (a long-lived flow worker: forever)."""
    from img2dataset.logger import LoggerProcess

    try:
        yield
    except BaseException:
        for child in multiprocessing.active_children():
            if isinstance(child, LoggerProcess):
                child.terminate()
                child.join()
        raise


def guard_of(spec: PipelineSpec) -> Guard:
    """What each worker passes to `fetchguard.install` for this spec."""
    d = spec.download
    policy = spec.ingest.url_policy if d.guard_fetch else None
    return (policy, d.max_response_bytes, d.max_image_pixels, None, _host_limits(d))


def _run_img2dataset(
    spec: PipelineSpec,
    out_dir: Path,
    remote: RemoteDistributor | None = None,
    fetched_on: dict[int, str] | None = None,
) -> None:
    """Run img2dataset over the input files, its workers fetching through the fetch guard: this
    machine's worker pool, or `remote`'s (the ray engine's), which fills `fetched_on`."""
    d = spec.download
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    guard = guard_of(spec)
    if remote is None:
        name, distributor = "multiprocessing", functools.partial(_distributor, guard=guard)
    else:  # built (joining Ray) before img2dataset's output goes to its log
        name, distributor = "ray", remote(spec, guard, {} if fetched_on is None else fetched_on)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(output_to(out_dir / "img2dataset.log"))
        _worker_context()  # the forkserver's import of img2dataset runs beside this process's own
        multiprocessing.forkserver.ensure_running()
        from img2dataset import download as img2dataset_download

        from mvlp_core.stages.download_logger import ForkedLogger

        img2dataset_main = sys.modules["img2dataset.main"]  # the package's `main` names a function
        stack.enter_context(_patched(img2dataset_main, f"{name}_distributor", distributor))
        stack.enter_context(_patched(img2dataset_main, "LoggerProcess", functools.partial(ForkedLogger, log)))
        stack.enter_context(_logger_stopped_on_error())
        img2dataset_download(
            url_list=str(out_dir / INPUT_DIR),
            input_format="parquet",
            url_col="url",
            caption_col="caption",
            save_additional_columns=[KEY_COLUMN],
            output_folder=str(out_dir / WDS_DIR),
            output_format="webdataset",
            image_size=d.image_size,
            resize_mode=d.resize_mode,
            encode_quality=d.encode_quality,
            encode_format="jpg",
            min_image_size=d.min_image_size,
            max_aspect_ratio=d.max_aspect_ratio or float("inf"),
            max_image_area=d.max_image_pixels,
            timeout=d.timeout,
            retries=d.retries,
            processes_count=d.processes,
            thread_count=d.threads,
            number_sample_per_shard=spec.ingest.shard_size,
            incremental_mode="incremental",
            distributor=name,
            extract_exif=False,
            enable_wandb=False,
            compute_hash="sha256",
            user_agent_token=d.user_agent_token,
            disallowed_header_directives=d.opt_out_directives,
        )


def _tar_members(path: Path) -> set[str]:
    try:
        with tarfile.open(path) as tar:
            return {m.name for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as err:
        raise contract.StageError(
            f"download: {path} is unreadable ({err}) although img2dataset marked it done; "
            f"delete {path} and its _stats.json and re-run"
        ) from None


def _shard_intact(out_dir: Path, name: str) -> bool:
    """Whether img2dataset's finished shard `name` (its stats file exists) still holds every image
    its status file lists as a success, each readable to the end: a tar truncated or damaged after
    img2dataset finished it (its unit not yet committed) is fetched again, never read."""
    wds = out_dir / WDS_DIR
    try:
        status = pq.read_table(wds / f"{name}.parquet", columns=["key", "status"]).to_pylist()
        members = set()
        with tarfile.open(wds / f"{name}.tar") as tar:
            for m in tar:
                if m.isfile():
                    tar.extractfile(m).read()  # raises on a member cut short
                    members.add(m.name)
    except (OSError, EOFError, tarfile.TarError, pa.ArrowException):
        return False
    return all(f"{s['key']}.jpg" in members for s in status if s["status"] == "success")


def _forget_damaged_shards(out_dir: Path, shards: list[int]) -> None:
    """Make img2dataset's incremental mode redo finished shards whose files are damaged."""
    for shard in shards:
        name = f"{shard:05d}"
        if (out_dir / WDS_DIR / f"{name}_stats.json").exists() and not _shard_intact(out_dir, name):
            for suffix in ("_stats.json", ".parquet", ".tar"):
                (out_dir / WDS_DIR / f"{name}{suffix}").unlink(missing_ok=True)


def _commit(
    unit: str,
    shard: int | None,
    blocked: list[contract.Reject],
    ingest_dir: Path,
    out_dir: Path,
    node: str | None = None,
) -> contract.UnitResult:
    ingest = pq.read_table(ingest_dir / f"shard-{unit}.parquet").to_pylist()
    by_key = {r["key"]: r for r in ingest}
    rejects = list(blocked)
    samples = []
    if shard is not None:
        name = f"{shard:05d}"
        stats = out_dir / WDS_DIR / f"{name}_stats.json"
        if not stats.exists():
            raise contract.StageError(
                f"download: img2dataset did not finish shard {name} (no {stats.name}); "
                "see its log above, then re-run: finished shards are kept"
            )
        members = _tar_members(out_dir / WDS_DIR / f"{name}.tar")
        status = pq.read_table(out_dir / WDS_DIR / f"{name}.parquet").to_pylist()
        for s in status:
            key = s[KEY_COLUMN]
            if s["status"] == "success" and f"{s['key']}.jpg" in members:
                rec = by_key[key]
                samples.append(
                    {
                        "key": key,
                        "row": rec["row"],
                        "url": rec["url"],
                        "caption": rec["caption"],
                        "tar": f"{WDS_DIR}/{name}.tar",
                        "member": f"{s['key']}.jpg",
                        "width": s["width"],
                        "height": s["height"],
                    }
                )
            elif s["status"] == "success":
                rejects.append(contract.Reject(key, "missing_from_tar", f"{s['key']}.jpg"))
            else:
                msg = (s.get("error_message") or s["status"])[:300]
                rejects.append(contract.Reject(key, error_reason(msg, s["status"]), msg))
    samples.sort(key=lambda r: r["key"])
    atomic.write_parquet(
        out_dir / f"samples-{unit}.parquet", pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA)
    )
    files = {f"samples-{unit}.parquet": len(samples)}
    if shard is not None:
        files[f"{WDS_DIR}/{shard:05d}.tar"] = len(samples)
    guarded = Counter(r.reason for r in rejects if fetchguard.BLOCK_PHRASE in r.detail)
    extra: dict[str, Any] = {"fetch_guard_blocked": dict(guarded)}
    if node is not None:
        extra["node"] = node  # the Ray node that fetched the unit's shard
    return contract.UnitResult(
        files=files,
        samples_in=len(ingest),
        samples_out=len(samples),
        rejects=rejects,
        extra=extra,
    )


def plan(ctx: Context) -> Work:
    spec, out_dir = ctx.spec, ctx.out_dir
    ingest_dir = ctx.inputs["ingest"]
    units = _units(ingest_dir)
    state: dict[str, Any] = {}
    fetched_on: dict[int, str] = {}  # shard -> Ray node, on the ray engine

    def before(pending: list[str]) -> None:
        state["pending"] = pending
        state["shard_of"], state["blocked"] = _write_inputs(spec, ingest_dir, out_dir, units)
        _forget_damaged_shards(out_dir, [s for u in pending if (s := state["shard_of"][u]) is not None])
        t0 = time.perf_counter()
        if any(state["shard_of"][u] is not None for u in pending):
            _run_img2dataset(spec, out_dir, ctx.hook, fetched_on)
        state["fetch_seconds"] = time.perf_counter() - t0

    def process(unit: str) -> contract.UnitResult:
        shard = state["shard_of"][unit]
        node = fetched_on.get(shard) if shard is not None else None
        return _commit(unit, shard, state["blocked"][unit], ingest_dir, out_dir, node)

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        fetched = sum(r["samples_out"] for r in records if r["unit"] in state.get("pending", ()))
        seconds = state.get("fetch_seconds") or 0
        rate = round(fetched / seconds, 2) if seconds else None
        extra = {
            "images_per_second": rate,
            "image_size": spec.download.image_size,
            "fetch_guard": spec.download.guard_fetch,
            "fetch_guard_blocked": dict(
                sum((Counter(r["extra"].get("fetch_guard_blocked", {})) for r in records), Counter())
            ),
        }
        nodes = Counter(r["extra"]["node"] for r in records if "node" in r["extra"])
        if nodes:
            extra["units_by_node"] = dict(sorted(nodes.items()))
        return extra

    return Work(units, process, before=before, finalize=finalize)


def needs(spec: PipelineSpec) -> Needs:
    d = spec.download
    if spec.execution.engines.get("download") == "ray":
        return Needs(
            resources=f"{d.processes} shard(s) at once as Ray tasks of 1 CPU x {d.threads} threads, "
            "the stage folder on storage every node sees"
        )
    return Needs(resources=f"{d.processes} worker process(es) x {d.threads} threads on this machine")


STAGE = Stage(
    "download",
    deps=("ingest",),
    config=config,
    plan=plan,
    engines=local_or_ray("ray_jobs.download:distributor"),
    needs=needs,
)


def iter_images(download_dir: Path, tar: str) -> dict[str, memoryview]:
    """All JPEGs of one img2dataset tar, by member name: the tar read whole (one download shard:
    the unit's memory) and each JPEG a view of it."""
    data = (Path(download_dir) / tar).read_bytes()
    return {name: view for name, view in tarstream.members_in(data) if name.endswith(".jpg")}
