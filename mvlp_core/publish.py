"""Publishing the final shards to object storage (`publish:` in the spec).

Once the shard stage (text-shard stage) is current, `pipeline.run_stage` calls `publish_stage`:
each file its manifest lists (`shard-*.tar`, `text-*.tar`) is uploaded under `publish.shards`
(`publish.text_shards`) with the same name, then `_manifest.json`, last, so that a prefix holding a
manifest holds every tar it lists. Before a tar is replaced, an older `_manifest.json` there is
deleted: a reader never sees a manifest over tars it does not describe.

Idempotent: an object already there with the same size and content is skipped. Content is known
from `_published.json` in the stage folder (what was uploaded from which sha256, and the ETag it
got) or, without that record, from a plain MD5 ETag (S3 single-part uploads, GCS md5Hash); an
object neither settles is uploaded again. Objects under the prefix that the manifest does not list
(from an earlier, larger run) are left alone: readers go by the manifest.

Publishing is a copy, not a stage: it changes no fingerprint and no output, so a changed prefix
publishes again on the next run without recomputing anything.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

from mvlp_core import atomic, contract, storage
from mvlp_core.spec import PipelineSpec

RECORD = "_published.json"
TARGETS = {"shard": "shards", "text-shard": "text_shards"}
_MD5 = re.compile(r"^[0-9a-f]{32}$")

log = logging.getLogger(__name__)


def target(spec: PipelineSpec, stage: str) -> str | None:
    """The prefix `stage`'s output is published to, None when it is not published."""
    field = TARGETS.get(stage)
    return getattr(spec.publish, field) if field else None


def _etag(info: dict[str, Any]) -> str | None:
    value = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return str(value).strip('"') if value else None


def _plain_md5(info: dict[str, Any]) -> str | None:
    """The object's MD5 when its metadata holds it: an S3 ETag of a single-part upload (32 hex
    digits; a multipart ETag ends in -N) or GCS's md5Hash (base64)."""
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"').lower()
    if _MD5.match(etag):
        return etag
    md5 = info.get("md5Hash")
    if md5:
        try:
            return base64.b64decode(md5).hex()
        except (binascii.Error, ValueError):
            return None
    return None


def _same(info: dict[str, Any] | None, local: Path, sha256: str, recorded: dict[str, Any] | None) -> bool:
    """Whether the object `info` describes already holds `local` (whose sha256 is `sha256`)."""
    if info is None or info.get("size") != local.stat().st_size:
        return False
    if recorded and recorded.get("sha256") == sha256 and recorded.get("etag") == _etag(info):
        return True
    md5 = _plain_md5(info)
    return md5 is not None and md5 == storage.md5_file(local)


def _info(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    fs.invalidate_cache(path)
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None


def _load_record(out_dir: Path, prefix: str) -> dict[str, Any]:
    try:
        record = json.loads((out_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record.get("objects", {}) if record.get("prefix") == prefix else {}


def current(spec: PipelineSpec, stage: str, out_dir: Path) -> bool:
    """Whether the stage's output as it is now was published where the spec says (from the
    stage folder's record, no request): True when it is not to be published."""
    prefix = target(spec, stage)
    if prefix is None:
        return True
    manifest = Path(out_dir) / contract.MANIFEST
    objects = _load_record(Path(out_dir), prefix)
    return manifest.is_file() and objects.get(contract.MANIFEST, {}).get("sha256") == atomic.sha256_file(
        manifest
    )


def publish_stage(
    spec: PipelineSpec, stage: str, out_dir: Path, manifest: contract.Manifest | None
) -> dict[str, Any] | None:
    """Upload the stage's output to its prefix (see the module docstring); None when it is not
    published, else what was done: {"prefix", "uploaded": [...], "skipped": [...]}."""
    prefix = target(spec, stage)
    if prefix is None or manifest is None:
        return None
    out_dir = Path(out_dir)
    recorded = _load_record(out_dir, prefix)
    names = [*sorted(manifest.files), contract.MANIFEST]
    objects = {rel: entry for rel, entry in recorded.items() if rel in names}  # updated as it goes
    uploaded, skipped = [], []
    with storage.errors(prefix, f"{stage}: publishing to"):
        fs, root = fsspec.core.url_to_fs(prefix)
        plan = []
        for rel in names:
            local = out_dir / rel
            sha = manifest.files[rel]["sha256"] if rel in manifest.files else atomic.sha256_file(local)
            path = storage.join(root, rel)
            info = _info(fs, path)
            plan.append((rel, local, sha, path, info, _same(info, local, sha, recorded.get(rel))))
        stale_manifest = plan[-1][4] is not None and not plan[-1][5]
        if stale_manifest and not all(same for *_, same in plan[:-1]):
            fs.rm_file(plan[-1][3])  # the old manifest goes before any tar it lists is replaced
        try:
            _upload(plan, fs, stage, prefix, objects, uploaded, skipped)
        finally:  # what got there is recorded even when an upload fails: a re-run skips it
            _save_record(out_dir, prefix, manifest.fingerprint, objects)
    log.info("%s: published to %s: %d uploaded, %d already there", stage, prefix, len(uploaded), len(skipped))
    return {"prefix": prefix, "uploaded": uploaded, "skipped": skipped}


def _save_record(out_dir: Path, prefix: str, fingerprint: str, objects: dict[str, Any]) -> None:
    atomic.write_json(
        out_dir / RECORD,
        {
            "prefix": prefix,
            "fingerprint": fingerprint,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "objects": objects,
        },
    )


def _upload(
    plan: list[tuple[str, Path, str, str, dict[str, Any] | None, bool]],
    fs: fsspec.AbstractFileSystem,
    stage: str,
    prefix: str,
    objects: dict[str, Any],
    uploaded: list[str],
    skipped: list[str],
) -> None:
    """Upload what `plan` marks as not there yet, in order; each file's entry into `objects`."""
    for rel, local, sha, path, info, same in plan:
        if same:
            skipped.append(rel)
        else:
            fs.put_file(str(local), path)
            info = _info(fs, path)
            if info is None or info.get("size") != local.stat().st_size:
                raise contract.StageError(
                    f"{stage}: publishing {rel} to {prefix}: the object store holds "
                    f"{None if info is None else info.get('size')} bytes, not {local.stat().st_size}; "
                    "re-run to upload it again"
                )
            uploaded.append(rel)
        objects[rel] = {"sha256": sha, "size": local.stat().st_size, "etag": _etag(info)}


def published_files(prefix: str, pattern: str, fingerprint: str, what: str) -> list[str]:
    """The URLs of the files matching `pattern` that the `_manifest.json` under `prefix` lists,
    after checking that it is the manifest of the output with `fingerprint` (the one the workdir
    holds): a prefix holding another run's shards, or none yet, is a StageError."""
    url = storage.join(prefix, contract.MANIFEST)
    with storage.errors(url, what):
        try:
            with storage.open_input(url, what=what) as f:
                remote = json.loads(f.read())
        except FileNotFoundError:
            remote = None
    if remote is None or remote.get("fingerprint") != fingerprint:
        found = (
            "no _manifest.json" if remote is None else f"shards of fingerprint {remote.get('fingerprint')}"
        )
        raise contract.StageError(
            f"{what} {prefix} holds {found}, not the output in the workdir ({fingerprint}); publish "
            "it (re-run the stage: mvlp run SPEC --only shard / --only text-shard) or set "
            "pretrain.loader.read_from: workdir"
        )
    return [
        storage.join(prefix, name) for name in sorted(remote.get("files", {})) if Path(name).match(pattern)
    ]
