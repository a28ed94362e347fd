"""Peak memory against input size, for the stages whose input grows with the dataset.

- ingest on CC3M-format lists (caption<TAB>url, no header) of 0.3M, 1M and 3.3M rows, written on
  the fly with CC3M's shape: one row in a hundred repeats an earlier URL, one in a thousand has an
  unusable URL. `MVLP_BENCH_MEMORY_ROWS=300000,1000000` picks other lengths.
- shard on 20, 100 and 400 download shards of 250 images each (upstream outputs written on the
  fly: samples, img2dataset's hashes, one translation, alignment and QA pair a key).
  `MVLP_BENCH_MEMORY_UNITS=20,100` picks other counts.

The baseline of each is the same stage on the smallest input, run side by side, so a ratio near 1
means memory does not grow with the input. Each measurement runs in its own process
(`python -m benchmarks.bench_memory STAGE INPUT WORKDIR`) that reports its peak RSS (`ru_maxrss`).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks._metrics import result

ROWS = (300_000, 1_000_000, 3_318_333)  # 3,318,333: CC3M's training list
UNITS = (20, 100, 400)
PER_UNIT = 250
WORDS = "a man woman dog cat red blue small large on the in with of at near street beach".split()


def sizes(variable: str, default: tuple[int, ...]) -> tuple[int, ...]:
    chosen = os.environ.get(variable)
    return tuple(int(n) for n in chosen.split(",")) if chosen else default


def write_shard_inputs(folder: Path, units: int) -> None:
    """Upstream outputs of `units` download shards of PER_UNIT small JPEGs, one unit at a time."""
    import hashlib
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from mvlp_core import contract
    from mvlp_core.stages.download import SAMPLES_SCHEMA

    stages = ("download", "translate", "align", "qa")
    for name in stages:
        (folder / name / "webdataset").mkdir(parents=True)
        extra = {
            "translate": {"per_language": {"de": units * PER_UNIT}, "provenance": {"de": "hf:x"}},
            "align": {"provenance": "eflomal:model3"},
            "qa": {"generator": "rules"},
        }.get(name, {})
        contract.Manifest(name, "fp", {}, 0, 0, {}, 0.0, 0, extra).save(folder / name)
    for u in range(units):
        unit = f"{u:05d}"
        samples, hashes, translations, qa, align = [], [], [], [], []
        with tarfile.open(folder / "download" / "webdataset" / f"{unit}.tar", "w") as tar:
            for j in range(PER_UNIT):
                i = u * PER_UNIT + j
                key = f"cc3m-{i:09d}"
                out = io.BytesIO()
                Image.new("RGB", (32, 32), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(out, "JPEG")
                jpg = out.getvalue()
                info = tarfile.TarInfo(f"{j:04d}.jpg")
                info.size = len(jpg)
                tar.addfile(info, io.BytesIO(jpg))
                caption = f"a photo number {i} of a street"
                samples.append(
                    {
                        "key": key,
                        "row": i,
                        "url": f"http://x/{i}.jpg",
                        "caption": caption,
                        "tar": f"webdataset/{unit}.tar",
                        "member": f"{j:04d}.jpg",
                        "width": 32,
                        "height": 32,
                    }
                )
                hashes.append(
                    {"mvlp_key": key, "status": "success", "sha256": hashlib.sha256(jpg).hexdigest()}
                )
                translations.append({"key": key, "lang": "de", "text": f"ein Foto {i}", "provenance": "hf:x"})
                qa.append({"key": key, "question": "what is it?", "answer": "a street", "generator": "rules"})
                align.append(
                    {
                        "key": key,
                        "words_en": caption.split(),
                        "words": ["ein", "Foto", str(i)],
                        "links": [[0, 0], [2, 1]],
                    }
                )
        pq.write_table(
            pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA),
            folder / "download" / f"samples-{unit}.parquet",
        )
        pq.write_table(pa.Table.from_pylist(hashes), folder / "download" / "webdataset" / f"{unit}.parquet")
        pq.write_table(pa.Table.from_pylist(translations), folder / "translate" / f"{unit}.parquet")
        pq.write_table(pa.Table.from_pylist(qa), folder / "qa" / f"{unit}.parquet")
        pq.write_table(
            pa.Table.from_pylist(align), folder / "align" / f"de-{unit}.parquet", row_group_size=2048
        )


def write_list(path: Path, rows: int) -> None:
    """A CC3M-shaped list, one line at a time (never held in memory)."""
    rng = random.Random(rows)
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            caption = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
            n = rng.randrange(i) if i and rng.random() < 0.01 else i
            url = f"http://img{n % 97}.example.com/photos/{n:09d}/image.jpg"
            f.write(f"{caption}\t{'ftp://bad' if rng.random() < 0.001 else url}\n")


def spec_file(workdir: Path, url_list: Path) -> Path:
    dataset = {
        "name": "cc3m",
        "url_list": str(url_list),
        "format": "tsv",
        "header": False,
        "columns": ["caption", "url"],
        "url_column": "url",
        "caption_column": "caption",
    }
    raw = {
        "name": "bench-memory",
        "workdir": str(workdir),
        "dataset": {"spec": dataset},
        "languages": ["de"],
        "translate": {"backend": "hf"},
    }
    path = workdir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def child(stage: str, source: str, workdir: str) -> None:
    """Run one stage in this process and print its counts and peak RSS as JSON."""
    from mvlp_core import pipeline
    from mvlp_core.spec import load_spec

    work = Path(workdir)
    if stage == "shard":
        from mvlp_core.stages.shard import STAGE

        spec = load_spec("demo", ["languages=[de]", "shard.samples_per_shard=1000"], workdir=work)
        inputs = {name: Path(source) / name for name in STAGE.deps}
        manifest = STAGE.run(spec, inputs, work / "shard")
    else:
        spec = load_spec(spec_file(work, Path(source)), ["ingest.shard_size=10000"], workdir=work)
        manifest = pipeline.run_stage(spec, stage, force=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak_mb, "samples_in": manifest.samples_in, "units": manifest.units}))


def measure(stage: str, size: int, tmp: Path) -> dict:
    folder = tmp / f"{stage}-{size}"
    folder.mkdir()
    if stage == "shard":
        source = folder / "upstream"
        write_shard_inputs(source, size)
    else:
        source = folder / "list.tsv"
        write_list(source, size)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", stage, str(source), str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _curve(stage: str, chosen: tuple[int, ...], tmp: Path, unit: str, what: str) -> list[dict]:
    base = measure(stage, chosen[0], tmp)
    rows = []
    for n in chosen[1:]:
        got = measure(stage, n, tmp)
        expected = n if stage == "ingest" else n * PER_UNIT
        assert got["samples_in"] == expected, got
        rows.append(
            result(
                f"{stage}_peak_rss_{n}_{unit}",
                got["peak_mb"],
                "MB",
                f"{stage} of {chosen[0]:,} {unit} ({base['peak_mb']:.0f} MB)",
                base["peak_mb"],
                1,
                False,
                what.format(n=n, units=got["units"]),
            )
        )
    return rows


def run(runs: int = 1) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-memory-") as tmp:
        ingest = _curve(
            "ingest",
            sizes("MVLP_BENCH_MEMORY_ROWS", ROWS),
            Path(tmp),
            "rows",
            "CC3M-format list of {n:,} rows, 10,000 rows a shard ({units} units)",
        )
        shard = _curve(
            "shard",
            sizes("MVLP_BENCH_MEMORY_UNITS", UNITS),
            Path(tmp),
            "units",
            f"{{n}} download shards of {PER_UNIT} images (32 px JPEG), joined with translations, "
            "alignments and QA",
        )
    return ingest + shard


if __name__ == "__main__":
    child(*sys.argv[1:4])
