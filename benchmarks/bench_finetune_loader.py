"""IGLUE fine-tuning's image draws: loader processes (`iglue.loader_workers`) against the unit's own
training thread, at the weakly-supervised recipe's 384 px, with its augmentation
(`iglue.finetune.augment`) and without it (a cache too small to hold anything, as on a training
set larger than `iglue.image_cache_mb`).

The figure a GPU fine-tune needs is the draw rate of one core: a GPU step that takes in N images a
second needs about N / (that rate) loader processes, or it waits on JPEG decoding. The photos are
COCO-sized (640x480, JPEG quality 90), noise under shapes so the encoder cannot shortcut them.
Each run alternates the two ways over the same index lists; the ratio is the median of the runs'.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._metrics import result

IMAGES = 192
PART = 16  # images a micro-batch
SIZE = 384  # the weakly-supervised recipe's iglue.image_size


def _photos(folder: Path) -> list[Path]:
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    paths = []
    for i in range(IMAGES):
        img = Image.effect_noise((640, 480), 40).convert("RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.randrange(600), rng.randrange(440)
            colour = tuple(rng.randrange(256) for _ in range(3))
            draw.ellipse([x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)], fill=colour)
        path = folder / f"{i}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def _streamed(paths: list[Path], augmented: bool):
    from mvlp_core.eval.prepared import AugmentedImages, ImageCache, Pending, Streamed
    from mvlp_core.model.parts.augment import AugmentedSquare
    from mvlp_core.model.parts.images import RGBSquare
    from mvlp_core.spec.augment import FinetuneAugmentSpec

    source = (
        AugmentedImages(AugmentedSquare(SIZE, **FinetuneAugmentSpec().model_dump()), seed=0)
        if augmented
        else ImageCache(RGBSquare(SIZE), max_bytes=1)  # holds nothing: every draw decodes
    )
    pending = [Pending((p,), {"label": i}, str(i)) for i, p in enumerate(paths)]
    return Streamed(lambda image, label: (label, image), pending, source)


def _rate(streamed, parts: list[list[int]], key: str, workers: int) -> float:
    start = time.perf_counter()
    n = sum(len(part) for part in streamed.batches(parts, key, workers))
    return n / (time.perf_counter() - start)


def run(runs: int = 3) -> list[dict]:
    import torch

    torch.set_num_threads(1)  # as a unit runs
    workers = max(1, os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = _photos(Path(tmp))
        order = list(range(IMAGES))
        for augmented in (True, False):
            thread, ahead, ratios = [], [], []
            streamed = _streamed(paths, augmented)
            try:
                _rate(streamed, [order[:PART]], "warm", workers)  # start the processes once, as a unit does
                for run_ in range(runs):
                    random.Random(run_).shuffle(order)
                    parts = [order[i : i + PART] for i in range(0, IMAGES, PART)]
                    thread.append(_rate(streamed, parts, f"{run_}", 0))
                    ahead.append(_rate(streamed, parts, f"{run_}", workers))
                    ratios.append(ahead[-1] / thread[-1])
            finally:
                streamed.close()
            what = "augmented (crop 50-100%, flip, RandAugment(2, 7))" if augmented else "resized only"
            note = (
                f"{IMAGES} COCO-sized photos (640x480 JPEG, quality 90) drawn at {SIZE} px, {what}, in "
                f"micro-batches of {PART}; {workers} loader processes (one a core) against the unit's "
                f"training thread, which draws {statistics.median(thread):.0f} images/s (one core's rate: a "
                "GPU fine-tune taking in N images/s needs about N / that many loader processes); "
                f"ratio: median of {runs} alternating pairs"
            )
            rows.append(
                result(
                    f"finetune_draws_{'augmented' if augmented else 'plain'}_{SIZE}px",
                    statistics.median(ahead),
                    "images/s",
                    "the unit's training thread (loader_workers 0)",
                    statistics.median(thread),
                    runs,
                    True,
                    note,
                    ratio=statistics.median(ratios),
                )
            )
    return rows


if __name__ == "__main__":
    print(run(1))
