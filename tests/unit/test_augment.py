"""Pretraining augmentation as the weakly-supervised mVLP's released code runs it: RandomResizedCrop
(area 20-100%, aspect 3/4-4/3), a flip with p 0.5, RandAugment(N=2, M=7) whose drawn operations
each apply with p 0.5 at the released magnitudes; seeded draws, so a resumed loader repeats them;
the wsmvlp loader augments, evaluation does not."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from PIL import Image, ImageDraw

from mvlp_core.model.parts.augment import OPS, AugmentedSquare, crop_box, rand_augment
from mvlp_core.model.parts.images import RGBSquare
from mvlp_core.spec.augment import RELEASED_OPS, AugmentSpec, FinetuneAugmentSpec
from mvlp_core.spec.model_wsmvlp import WsmvlpModelSpec

Z999 = 3.2905  # two-sided 99.9% normal quantile


def _within(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= Z999 * math.sqrt(n * p * (1 - p))


def _bar(size: int = 64, x: int = 20) -> Image.Image:
    """A black image with a one-pixel white column at `x`."""
    img = Image.new("RGB", (size, size))
    ImageDraw.Draw(img).line([(x, 0), (x, size - 1)], fill=(255, 255, 255))
    return img


def _centre(img: Image.Image, lo: int = 60, hi: int = 116) -> float:
    """The white bar's column, intensity-weighted, away from the edges a shift fills with grey."""
    row = [img.getpixel((x, img.height // 2))[0] for x in range(lo, hi)]
    return sum(x * v for x, v in zip(range(lo, hi), row)) / sum(row)


def test_defaults_are_the_released_codes() -> None:
    a = AugmentSpec()
    assert (a.crop_scale, a.hflip, a.n_ops, a.magnitude, a.prob) == ((0.2, 1.0), True, 2, 7, 0.5)
    assert a.ops == list(RELEASED_OPS) and len(a.ops) == 10
    assert set(RELEASED_OPS) <= set(OPS) and "Solarize" not in RELEASED_OPS
    assert WsmvlpModelSpec(size="micro").augment == a
    assert WsmvlpModelSpec(size="micro", augment=None).augment is None
    tune = FinetuneAugmentSpec()  # the released fine-tune pipeline crops 50-100%
    assert tune.crop_scale == (0.5, 1.0) and tune.model_dump(exclude={"crop_scale"}) == a.model_dump(
        exclude={"crop_scale"}
    )
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentSpec(crop_scale=(0.5, 0.2))


def test_crop_box_draws_the_area_and_aspect_ranges() -> None:
    rng = random.Random(0)
    areas, aspects = [], []
    for _ in range(2000):
        left, top, right, bottom = crop_box(256, 256, (0.2, 1.0), rng)
        assert 0 <= left < right <= 256 and 0 <= top < bottom <= 256
        w, h = right - left, bottom - top
        areas.append(w * h / 256**2)
        aspects.append(w / h)
    assert 0.19 < min(areas) < 0.25 and max(areas) > 0.95  # the whole range is drawn
    assert min(aspects) > 0.74 and max(aspects) < 1.35
    # uniform in area (0.6 on average), less the large non-square boxes that do not fit and are
    # drawn again, as torchvision's
    assert 0.5 < sum(areas) / len(areas) < 0.6
    # a long thin image falls back to its centre at the nearest allowed aspect
    assert crop_box(400, 10, (0.99, 1.0), random.Random(1)) == (193, 0, 206, 10)


@pytest.mark.parametrize(
    ("op", "size", "moved"),
    # M=7: 7 of the released 10 pixels at its 256 px, the same share at 128 px; a y-shear keeps
    # every column
    [("TranslateX", 256, 7), ("TranslateX", 128, 3.5), ("ShearY", 256, 0)],
)
def test_geometric_magnitudes(op: str, size: int, moved: float) -> None:
    shifts = Counter()
    for seed in range(40):
        out = rand_augment(_bar(size, x=100), random.Random(seed), [op], n=1, magnitude=7, prob=1.0)
        shifts[round(_centre(out) - 100, 3)] += 1  # a half-pixel shift spreads the bar over two
    assert set(shifts) == ({-moved, moved} if moved else {0}) and all(shifts.values())


def test_rotation_is_thirty_degrees_at_the_top_level() -> None:
    img = _bar(x=32)
    got = {
        rand_augment(img, random.Random(s), ["Rotate"], n=1, magnitude=10, prob=1.0).tobytes()
        for s in range(20)
    }
    want = {img.rotate(a, resample=Image.BILINEAR, fillcolor=(128, 128, 128)).tobytes() for a in (30, -30)}
    assert got == want


def test_enhancement_factor_is_released_formula() -> None:
    grey = Image.new("RGB", (8, 8), (100, 100, 100))
    out = rand_augment(grey, random.Random(0), ["Brightness"], n=1, magnitude=7, prob=1.0)
    assert out.getpixel((3, 3)) == (136, 136, 136)  # factor 7/10 x 1.8 + 0.1 = 1.36


def test_ops_drawn_with_replacement_each_applied_with_p_half() -> None:
    grey = Image.new("RGB", (4, 4), (100, 100, 100))
    n = 2000
    applied = Counter()
    for seed in range(n):
        out = rand_augment(grey, random.Random(seed), ["Brightness"], n=2, magnitude=7, prob=0.5)
        applied[{100: 0, 136: 1, 184: 2}[out.getpixel((0, 0))[0]]] += 1  # 100 x 1.36 x 1.36 = 184
    assert _within(applied[0], n, 0.25) and _within(applied[1], n, 0.5) and _within(applied[2], n, 0.25)


def test_flip_half_the_time_and_draws_repeat_with_the_seed() -> None:
    aug = AugmentedSquare(32, crop_scale=(1.0, 1.0), hflip=True, ops=[], n_ops=0, magnitude=7, prob=0.5)
    img = Image.new("RGB", (32, 32))
    ImageDraw.Draw(img).rectangle([0, 0, 15, 31], fill=(255, 0, 0))  # left half red
    n = 1000
    flipped = sum(int(aug(img, random.Random(s))[0, 16, 28]) == 255 for s in range(n))
    assert _within(flipped, n, 0.5)
    full = AugmentedSquare(32, **AugmentSpec().model_dump())
    photo = Image.effect_noise((48, 40), 60).convert("RGB")
    first = full(photo, random.Random("5:3:key"))
    assert first.dtype == torch.uint8 and tuple(first.shape) == (3, 32, 32)
    assert torch.equal(first, full(photo, random.Random("5:3:key")))
    assert not torch.equal(first, full(photo, random.Random("5:4:key")))
    with pytest.raises(ValueError, match="unknown RandAugment operation"):
        AugmentedSquare(32, crop_scale=(1, 1), hflip=False, ops=["Cutout"], n_ops=1, magnitude=1, prob=1)


def test_wsmvlp_trains_on_augmented_images_and_evaluates_on_plain_ones() -> None:
    from mvlp_core.model.wsmvlp.batch import image_transform, train_image_transform

    spec = WsmvlpModelSpec(size="micro")
    assert isinstance(train_image_transform(spec), AugmentedSquare)
    assert train_image_transform(spec).needs_rng and isinstance(image_transform(spec), RGBSquare)
    assert isinstance(train_image_transform(spec.model_copy(update={"augment": None})), RGBSquare)


def test_finetune_images_are_augmented_afresh_at_each_draw_and_repeat_with_the_seed(tmp_path) -> None:
    """`AugmentedImages` (iglue.finetune.augment): the same file gives another image for each draw
    key (epoch and index), the same image again for the same seed and key in another instance (a
    loader process), another for another seed; an item's two images (MaRVL) stacked, and None for a
    file that does not decode."""
    from mvlp_core.eval.prepared import AugmentedImages

    _bar(64, 20).save(tmp_path / "a.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    aug = AugmentedSquare(16, **AugmentSpec(crop_scale=(0.5, 1.0)).model_dump())
    first, second, other = (
        AugmentedImages(aug, seed=3),
        AugmentedImages(aug, seed=3),
        AugmentedImages(aug, seed=4),
    )
    keys = ["1/0", "2/0", "3/0", "1/1"]
    draws = [first.stack((tmp_path / "a.png",), key) for key in keys]
    assert all(d.shape == (3, 16, 16) and d.dtype == torch.uint8 for d in draws)
    assert len({d.numpy().tobytes() for d in draws}) == 4
    assert all(torch.equal(d, second.stack((tmp_path / "a.png",), key)) for d, key in zip(draws, keys))
    assert not all(torch.equal(d, other.stack((tmp_path / "a.png",), key)) for d, key in zip(draws, keys))
    assert first.stack((tmp_path / "a.png", tmp_path / "a.png"), "1/0").shape == (2, 3, 16, 16)
    assert first.stack((tmp_path / "a.png", tmp_path / "bad.jpg"), "1/0") is None


def test_a_streamed_set_drawn_ahead_in_processes_gives_the_same_examples(tmp_path) -> None:
    """`Streamed.batches` with loader processes: the same augmented images, in the same order, as
    drawn in the caller's thread; the undecodable recorded in the caller's set; torch's global RNG
    (dropout's, in the training step) not drawn from."""
    from mvlp_core.eval.prepared import AugmentedImages, Pending, Streamed

    for i in range(6):
        _bar(64, 10 + 7 * i).save(tmp_path / f"{i}.png")
    (tmp_path / "3.png").write_bytes(b"broken")
    aug = AugmentedImages(AugmentedSquare(16, **AugmentSpec().model_dump()), seed=1)
    pending = [Pending((tmp_path / f"{i}.png",), {"label": i}, f"item{i}") for i in range(6)]
    parts = [[4, 0], [3, 5], [1, 2]]
    drawn, sets = {}, {}
    for workers in (0, 2):
        sets[workers] = Streamed(lambda image, label: (label, image), pending, aug)
        rng = torch.get_rng_state()
        try:
            drawn[workers] = list(sets[workers].batches(parts, "1", workers))
        finally:
            sets[workers].close()
        assert torch.equal(torch.get_rng_state(), rng)
    assert [[label for label, _ in part] for part in drawn[2]] == [[4, 0], [5], [1, 2]]
    assert all(
        torch.equal(a[1], b[1])
        for pa, pb in zip(drawn[0], drawn[2], strict=True)
        for a, b in zip(pa, pb, strict=True)
    )
    assert [r.key for r in sets[2].rejects] == [r.key for r in sets[0].rejects] == ["item3"]
    again = list(Streamed(lambda image, label: (label, image), pending, aug).batches(parts, "2", 0))
    assert not torch.equal(again[0][0][1], drawn[0][0][0][1])  # another epoch's key: another draw


class _LoggedSquare(RGBSquare):
    """RGBSquare that appends a line to a file for each image it transforms (decodes), from
    whichever process runs it."""

    def __init__(self, size: int, log) -> None:
        super().__init__(size)
        self.log = log

    def __call__(self, image):
        with open(self.log, "a") as f:
            f.write("decoded\n")
        return super().__call__(image)


def test_loader_processes_and_their_caches_last_from_one_epoch_to_the_next(tmp_path) -> None:
    """Without augmentation the loader processes keep their image caches across `batches` calls
    (the epochs of a fine-tune, the fine-tunes of a few-shot grid): a second epoch decodes nothing;
    the images they send are copies of what they cache (a cached tensor sent as is would hold a
    shared-memory file descriptor for as long as it stays cached); `close` stops them."""
    from mvlp_core.eval.prepared import ImageCache, Pending, Streamed

    for i in range(6):
        _bar(64, 10 + 7 * i).save(tmp_path / f"{i}.png")
    log = tmp_path / "decodes.log"
    cache = ImageCache(_LoggedSquare(16, log), max_bytes=2**20)
    pending = [Pending((tmp_path / f"{i}.png",), {"label": i}, f"item{i}") for i in range(6)]
    streamed = Streamed(lambda image, label: (label, image), pending, cache)
    try:
        first = list(streamed.batches([[0, 1, 2], [3, 4, 5]], "1", workers=1))
        second = list(streamed.batches([[5, 4, 3], [2, 1, 0]], "2", workers=1))
        workers = streamed._loader._iterator._workers
        assert all(w.is_alive() for w in workers)
    finally:
        streamed.close()
    assert not any(w.is_alive() for w in workers)
    assert log.read_text().count("decoded") == 6  # the second epoch came from the process's cache
    assert [label for part in second for label, _ in part] == [5, 4, 3, 2, 1, 0]
    assert torch.equal(first[0][0][1], second[1][2][1])
    out, _ = streamed.draw([0], "1", private=True)  # what a loader process sends: not its cached tensor
    assert out[0][1].data_ptr() != cache.get(tmp_path / "0.png").data_ptr()


def test_loader_processes_forked_from_a_prefect_run_end_cleanly(tmp_path) -> None:
    """A process that ran Prefect holds thread-exit hooks for its services' threads; a loader
    process forked from it must not run them at its exit (it would end with code 1 and the loader
    would fail as it stops), so a fine-tune inside `mvlp run` closes its loader cleanly."""
    import threading

    from mvlp_core.eval.prepared import ImageCache, Pending, Streamed

    def parents_service_drain() -> None:  # as Prefect's QueueService._at_exit in a child
        raise RuntimeError("no such thread in this process")

    _bar(64, 20).save(tmp_path / "a.png")
    streamed = Streamed(
        lambda image, label: (label, image),
        [Pending((tmp_path / "a.png",), {"label": 0}, "a")],
        ImageCache(RGBSquare(16), max_bytes=2**20),
    )
    threading._register_atexit(parents_service_drain)
    try:
        assert [len(part) for part in streamed.batches([[0], [0]], "1", workers=1)] == [1, 1]
        streamed.close()  # raised "DataLoader worker ... exited unexpectedly with exit code 1"
    finally:
        hooks = threading._threading_atexits  # functools.partial objects around what was registered
        hooks[:] = [h for h in hooks if getattr(h, "func", None) is not parents_service_drain]
