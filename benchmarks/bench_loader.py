"""Loader throughput: samples/s per core of the pretraining loader (webdataset pipeline: read,
JPEG decode, the model's image transform, UniGen's task mix, both tokenizers, collate) next to
a raw loop that only reads the tars and decodes the JPEGs. Ray Data's `read_webdataset` +
`iter_torch_batches` doing the same work is measured too (the alternative the issue names).

Shards: synthetic, shaped like the demo's (64 px JPEGs, record schema of DESIGN.md)."""

from __future__ import annotations

import io
import json
import os
import random
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from benchmarks._metrics import result

SHARDS, PER_SHARD, BATCH, IMAGE, WIDTH = 4, 250, 32, 64, 64


def write_shards(folder: Path) -> list[str]:
    rng = random.Random(0)
    colours = ["red", "blue", "green", "yellow"]
    for s in range(SHARDS):
        with tarfile.open(folder / f"shard-{s:05d}.tar", "w") as tar:
            for i in range(PER_SHARD):
                key = f"bench-{s * PER_SHARD + i:09d}"
                c = rng.choice(colours)
                img = Image.new("RGB", (IMAGE, IMAGE), "white")
                ImageDraw.Draw(img).ellipse([8, 8, 40, 40], fill=c)
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=90)
                rec = {
                    "key": key,
                    "captions": {"en": f"a {c} circle", "de": f"ein {c} Kreis", "fr": f"un cercle {c}"},
                    "qa": [{"question": "what colour is the circle?", "answer": c}],
                }
                for name, data in ((f"{key}.jpg", buf.getvalue()), (f"{key}.json", json.dumps(rec).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return sorted(str(p) for p in folder.glob("shard-*.tar"))


def raw(urls: list[str]) -> float:
    t0, n = time.perf_counter(), 0
    for url in urls:
        with tarfile.open(url) as tar:
            for m in tar:
                data = tar.extractfile(m).read()
                if m.name.endswith(".jpg"):
                    with Image.open(io.BytesIO(data)) as img:
                        img.convert("RGB").load()
                    n += 1
    return n / (time.perf_counter() - t0)


def _model_parts(folder: Path):
    from mvlp_core.model import build_tokenizers, collate, image_transform
    from mvlp_core.spec import ModelSpec

    spec = ModelSpec(size="tiny")
    texts = ["a red circle", "ein roter Kreis", "un cercle rouge", "what colour is the circle?"] * 50
    tok = build_tokenizers(spec, texts, folder / "tok")
    return image_transform(spec), (lambda exs: collate(exs, tok, spec)), spec


def ours(urls: list[str], transform, collate_fn) -> float:
    from mvlp_core.spec import MixSpec
    from mvlp_core.train import data

    cfg = data.LoaderConfig(urls, [], MixSpec(), ["de", "fr"], BATCH, 256, 0)
    it = iter(data.Batches(cfg, transform, collate_fn))
    n_batches = SHARDS * PER_SHARD // BATCH
    next(it)  # the shuffle buffer fills once; steady state is what training sees
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * BATCH / (time.perf_counter() - t0)


def ray_data(urls: list[str], transform, collate_fn) -> float:
    import ray
    import torch

    from mvlp_core.spec import MixSpec
    from mvlp_core.train import data

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    mix, rng, skips = MixSpec(), random.Random(0), data.Skips()
    ds = ray.data.read_webdataset(urls, decoder=None)

    def to_batch(rows):
        exs = []
        for jpg, js, key in zip(rows["jpg"], rows["json"], rows["__key__"]):
            ex = data.image_example(
                {"__key__": key, "jpg": jpg, "json": js}, mix, ["de", "fr"], transform, rng, skips
            )
            exs.append(ex)
        b = collate_fn(exs)
        # fixed-width token columns: Ray Data re-blocks rows, and padded lengths differ per batch
        return {
            k: torch.nn.functional.pad(v, (0, WIDTH - v.shape[1])).numpy() if v.dim() == 2 else v.numpy()
            for k, v in b.items()
        }

    ds = ds.map_batches(to_batch, batch_size=BATCH, batch_format="numpy")
    t0, n = time.perf_counter(), 0
    for b in ds.iter_torch_batches(batch_size=BATCH):
        n += len(b["task"])
    rate = n / (time.perf_counter() - t0)
    ray.shutdown()
    return rate


def run(runs: int = 3) -> list[dict]:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        urls = write_shards(Path(tmp))
        transform, collate_fn, _ = _model_parts(Path(tmp))
        base, mine, rd = [], [], []
        for _ in range(runs):
            base.append(raw(urls))
            mine.append(ours(urls, transform, collate_fn))
        rd.append(ray_data(urls, transform, collate_fn) / cores)
    b, m = statistics.median(base), statistics.median(mine)
    note = (
        f"{SHARDS}x{PER_SHARD} samples, {IMAGE}px JPEG, batch {BATCH}; both single-process (1 core); "
        f"ours also transforms, mixes tasks, tokenises, collates. Ray Data read_webdataset+map_batches+"
        f"iter_torch_batches doing the same: {statistics.median(rd):.0f} samples/s per core "
        f"({cores} cores, first run incl. startup)"
    )
    return [
        result("loader_vs_raw_decode", m, "samples/s/core", "raw tar read + JPEG decode", b, runs, True, note)
    ]


if __name__ == "__main__":
    print(run(1))
