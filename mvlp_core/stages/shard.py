"""shard: downloaded images + translations + alignments + QA -> training WebDataset tars.

Each sample is `KEY.jpg` + `KEY.json` (DESIGN.md's record schema). Shards are reproducible: keys
in sorted order, fixed samples per shard, and tar headers with fixed mtime, owner and mode, so the
same stage inputs give byte-identical tars.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from mvlp_core import contract
from mvlp_core.atomic import atomic_path
from mvlp_core.keys import is_valid_key
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Shows, Stage, Work
from mvlp_core.stages.download import iter_images
from mvlp_core.tarmember import add_member


def _read_all(folder: Path, pattern: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted(Path(folder).glob(pattern)):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def _single_or_map(values: dict[str, str]) -> str | dict[str, str] | None:
    distinct = set(values.values())
    if not distinct:
        return None
    return distinct.pop() if len(distinct) == 1 else dict(sorted(values.items()))


class _Joined:
    """Everything the upstream stages know about each key, loaded once."""

    def __init__(self, inputs: dict[str, Path], languages: list[str]):
        self.samples = {r["key"]: r for r in _read_all(inputs["download"], "samples-*.parquet")}
        self.captions: dict[str, dict[str, str]] = defaultdict(dict)
        translate_prov: dict[str, str] = {}
        for r in _read_all(inputs["translate"], "[0-9]*.parquet"):
            self.captions[r["key"]][r["lang"]] = r["text"]
            translate_prov[r["lang"]] = r["provenance"]
        self.words: dict[str, dict[str, list[str]]] = defaultdict(dict)
        self.links: dict[str, dict[str, list[list[int]]]] = defaultdict(dict)
        for lang in languages:
            for path in sorted(Path(inputs["align"]).glob(f"{lang}-[0-9]*.parquet")):
                for r in pq.read_table(path).to_pylist():
                    self.words[r["key"]]["en"] = r["words_en"]
                    self.words[r["key"]][lang] = r["words"]
                    self.links[r["key"]][lang] = r["links"]
        self.qa: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in _read_all(inputs["qa"], "[0-9]*.parquet"):
            self.qa[r["key"]].append(
                {"question": r["question"], "answer": r["answer"], "generator": r["generator"]}
            )
        align_manifest = contract.Manifest.load(inputs["align"])
        qa_manifest = contract.Manifest.load(inputs["qa"])
        self.provenance = {
            "translate": _single_or_map(translate_prov),
            "align": align_manifest.extra.get("provenance"),
            "qa": qa_manifest.extra.get("generator"),
        }
        self.languages = languages

    def record(self, key: str, jpg: bytes, width: int, height: int) -> dict[str, Any]:
        s = self.samples[key]
        captions = {"en": s["caption"]}
        captions.update(
            {lang: self.captions[key][lang] for lang in self.languages if lang in self.captions[key]}
        )
        words = self.words.get(key, {})
        return {
            "key": key,
            "source": {"dataset": key.rsplit("-", 1)[0], "row": s["row"], "url": s["url"]},
            "image": {"width": width, "height": height, "sha256": hashlib.sha256(jpg).hexdigest()},
            "captions": captions,
            "words": {lang: words[lang] for lang in ["en", *self.languages] if lang in words},
            "alignments": {
                lang: self.links[key][lang] for lang in self.languages if lang in self.links.get(key, {})
            },
            "qa": self.qa.get(key, []),
            "provenance": self.provenance,
        }


def config(spec: PipelineSpec) -> dict[str, Any]:
    return {"shard": fingerprint_config(spec.shard), "languages": spec.languages}


def plan(ctx: Context) -> Work:
    spec, inputs, out_dir = ctx.spec, ctx.inputs, ctx.out_dir
    joined = _Joined(inputs, spec.languages)
    keys = sorted(joined.samples)
    per = spec.shard.samples_per_shard
    units = [f"{i:05d}" for i in range(max(1, -(-len(keys) // per)))]

    def process(unit: str) -> contract.UnitResult:
        i = int(unit)
        chunk = keys[i * per : (i + 1) * per]
        by_tar: dict[str, list[str]] = defaultdict(list)
        for k in chunk:
            by_tar[joined.samples[k]["tar"]].append(k)
        images: dict[str, bytes] = {}
        for tar_name, tar_keys in by_tar.items():
            members = iter_images(inputs["download"], tar_name)
            for k in tar_keys:
                images[k] = members.get(joined.samples[k]["member"], b"")
        rejects, written = [], 0
        name = f"shard-{unit}.tar"
        with atomic_path(out_dir / name) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for k in chunk:
                if not is_valid_key(k):  # member names come from keys: no '/', '..' or dots
                    rejects.append(contract.Reject(k, "bad_key", "not dataset-NNNNNNNNN"))
                    continue
                jpg = images[k]
                try:
                    with Image.open(io.BytesIO(jpg)) as img:
                        width, height = img.size
                except (UnidentifiedImageError, OSError) as err:
                    rejects.append(contract.Reject(k, "image_decode_error", str(err)[:200]))
                    continue
                record = json.dumps(joined.record(k, jpg, width, height), ensure_ascii=False)
                add_member(tar, f"{k}.jpg", jpg)
                add_member(tar, f"{k}.json", record.encode("utf-8"))
                written += 1
        return contract.UnitResult(
            files={name: written}, samples_in=len(chunk), samples_out=written, rejects=rejects
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        total = sum(r["samples_out"] for r in records) or 1
        multilingual = sum(1 for k in keys if joined.captions.get(k))
        with_qa = sum(1 for k in keys if joined.qa.get(k))
        return {
            "shards": len(records),
            "multilingual_fraction": round(multilingual / total, 4),
            "qa_fraction": round(with_qa / total, 4),
            "provenance": joined.provenance,
        }

    return Work(units, process, finalize=finalize)


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    tars = len(list(folder.glob("shard-*.tar")))
    return Shows(lines=(f"Shards: {folder} ({tars} tars, {state['samples_out']} samples)",))


STAGE = Stage("shard", deps=("download", "translate", "align", "qa"), config=config, plan=plan, shows=shows)
