"""Loader throughput: samples/s per core of the pretraining loader (tar read, JPEG decode, the
model's image transform, UniGen's task mix, both tokenizers, collate) next to a raw loop that only
reads the tars (with `tarfile`) and decodes the JPEGs, twice: with PIL (the floor this row has
always been measured against) and with libjpeg-turbo through simplejpeg, as the loader now decodes
a JPEG already at the model's size (the floor for the loader's own work). Ray Data's
`read_webdataset` + `iter_torch_batches` doing the same work is measured too (the alternative the
issue names).

Shards: synthetic, record schema of DESIGN.md, at two image sizes: the demo's 64 px, and
production's 224 px at quality 95 with photo-like noise (JPEG decode cost grows with detail). The
model's image size is the shards' (the shard stage writes images at the size training reads), so
the loader resizes nothing."""

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

import simplejpeg
from PIL import Image, ImageDraw

from benchmarks._metrics import result

SHARDS, PER_SHARD, BATCH, WIDTH, SHUFFLE = 4, 1000, 32, 64, 256
SIZES = {64: 90, 224: 95}  # image side -> JPEG quality
FLOORS = {  # the raw loop's decoder -> its row's name and baseline
    "pil": ("loader_vs_raw_decode", "raw tar read + JPEG decode (PIL)"),
    "simplejpeg": ("loader_vs_raw_simplejpeg_decode", "raw tar read + JPEG decode (simplejpeg)"),
}


def _image(size: int, colour: str, rng: random.Random) -> Image.Image:
    if size <= 64:  # the demo's flat synthetic scenes
        img = Image.new("RGB", (size, size), "white")
        ImageDraw.Draw(img).ellipse([8, 8, 40, 40], fill=colour)
        return img
    noise = Image.effect_noise((size, size), 48).convert("RGB")
    img = Image.blend(Image.new("RGB", (size, size), colour), noise, 0.5)
    for _ in range(6):
        x, y = rng.randrange(size), rng.randrange(size)
        ImageDraw.Draw(img).ellipse(
            [x - 30, y - 20, x + 30, y + 20], fill=rng.choice(["red", "blue", "green"])
        )
    return img


def write_shards(folder: Path, size: int) -> list[str]:
    rng = random.Random(0)
    colours = ["red", "blue", "green", "yellow"]
    for s in range(SHARDS):
        with tarfile.open(folder / f"shard-{s:05d}.tar", "w") as tar:
            for i in range(PER_SHARD):
                key = f"bench-{s * PER_SHARD + i:09d}"
                c = rng.choice(colours)
                img = _image(size, c, rng)
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=SIZES[size])
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


def _pil(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as img:
        img.convert("RGB").load()


def _simplejpeg(data: bytes) -> None:
    simplejpeg.decode_jpeg(data, colorspace="RGB")


def raw(urls: list[str], decode=_pil) -> float:
    t0, n = time.perf_counter(), 0
    for url in urls:
        with tarfile.open(url) as tar:
            for m in tar:
                data = tar.extractfile(m).read()
                if m.name.endswith(".jpg"):
                    decode(data)
                    n += 1
    return n / (time.perf_counter() - t0)


def _model_parts(folder: Path, size: int):
    from mvlp_core.model.unigen import build_tokenizers, collate, image_transform
    from mvlp_core.spec import ModelSpec

    spec = ModelSpec(size="tiny", image_size=size)
    texts = ["a red circle", "ein roter Kreis", "un cercle rouge", "what colour is the circle?"] * 50
    tok = build_tokenizers(spec, texts, folder / "tok")
    return image_transform(spec), (lambda exs: collate(exs, tok, spec)), spec


def ours(urls: list[str], transform, collate_fn) -> float:
    from mvlp_core.spec import MixSpec
    from mvlp_core.train import data

    cfg = data.LoaderConfig(urls, [], MixSpec(), ["de", "fr"], BATCH, SHUFFLE, 0)
    it = iter(data.Batches(cfg, transform, collate_fn))
    # the batches the shards hold after the first, which fills the shuffle buffer once: steady
    # state is what training sees
    n_batches = (len(urls) * PER_SHARD - SHUFFLE) // BATCH - 1
    next(it)
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


def _one_size(
    size: int, runs: int, with_ray_data: bool
) -> tuple[dict[str, tuple[float, float]], float, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards"
        folder.mkdir()
        urls = write_shards(folder, size)
        transform, collate_fn, _ = _model_parts(Path(tmp), size)
        # back-to-back pairs, one shard each (about a second apiece): this VM's speed drifts by
        # up to 2x over minutes, which a ratio of medians over whole passes takes in
        base: dict[str, list[float]] = {"pil": [], "simplejpeg": []}
        mine: list[float] = []
        for _ in range(runs):
            for url in urls:
                base["pil"].append(raw([url], _pil))
                base["simplejpeg"].append(raw([url], _simplejpeg))
                mine.append(ours([url], transform, collate_fn))
        rd = ray_data(urls, transform, collate_fn) / (os.cpu_count() or 1) if with_ray_data else None
    floors = {
        name: (statistics.median(b), statistics.median(m / x for m, x in zip(mine, b)))
        for name, b in base.items()
    }
    return floors, statistics.median(mine), rd


def run(runs: int = 3) -> list[dict]:
    cores = os.cpu_count() or 1
    rows = []
    for size, quality in SIZES.items():
        floors, m, rd = _one_size(size, runs, with_ray_data=size == 64)
        note = (
            f"{SHARDS}x{PER_SHARD} samples, {size}px JPEG (quality {quality}), model image size {size},"
            f" batch {BATCH}; both single-process (1 core); ours also mixes tasks, tokenises, collates"
            f" (uint8 images; JPEGs at the model's size decoded by libjpeg-turbo into their tensors); ratio: median of"
            f" {SHARDS * runs} back-to-back triples (PIL floor, simplejpeg floor, ours), one shard each"
        )
        if rd is not None:
            note += (
                f". Ray Data read_webdataset+map_batches+iter_torch_batches doing the same: {rd:.0f}"
                f" samples/s per core ({cores} cores, first run incl. startup)"
            )
        suffix = "" if size == 64 else f"_{size}px"
        for floor, (b, ratio) in floors.items():
            name, baseline = FLOORS[floor]
            rows.append(
                result(name + suffix, m, "samples/s/core", baseline, b, runs, True, note, ratio=ratio)
            )
    return rows


if __name__ == "__main__":
    print(run(1))
