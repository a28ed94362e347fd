"""The multi-stream data layer: the text-shard manifest is read (weights, shard ranges), monolingual
sentences follow the α-sampling weights, non-English pairs are kept unless a family asks for an
English side, the per-step plan is the same everywhere and follows its schedule, resume at any
step yields exactly the uninterrupted run's batches (with DataLoader workers too), and bad samples
are skipped and counted, never fatal."""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from mvlp_core import contract, sampling
from mvlp_core.forked import forget_parent_thread_exits
from mvlp_core.model.parts.augment import AugmentedSquare
from mvlp_core.spec.augment import AugmentSpec
from mvlp_core.train import streams as ms
from mvlp_core.train.data import Skips
from mvlp_core.train.plan import Schedule, StepPlan, lane_of, owned_steps, plan_for

Z999 = 3.2905  # two-sided 99.9% normal quantile
MONO = {"en": 60, "de": 20, "fr": 10, "sw": 5}  # sentences per language; en over 3 tars
PAIRS = {
    "wikimatrix:en-de": ("en", "de", 20),
    "wikimatrix:en-fr": ("en", "fr", 10),
    "ccm:de-fr": ("de", "fr", 10),
}


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (i * 7 % 256, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


def write_images(
    path: Path,
    keys: list[str],
    bad_json: set[str] = frozenset(),
    bad_image: set[str] = frozenset(),
    languages: tuple[str, ...] = (),
) -> None:
    """Image records with an English caption and one in each of `languages`."""
    with tarfile.open(path, "w") as tar:
        for i, k in enumerate(keys):
            captions = {"en": f"caption {k}", **{lang: f"{lang} caption {k}" for lang in languages}}
            rec = {"key": k, "captions": captions, "qa": []}
            _add(tar, f"{k}.jpg", b"no image here" if k in bad_image else _png(i))
            _add(tar, f"{k}.json", b"{oops" if k in bad_json else json.dumps(rec).encode())


def _text_tar(path: Path, records: list[dict[str, Any] | bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for i, r in enumerate(records):
            key = r["key"] if isinstance(r, dict) else f"broken-{path.stem}-{i:04d}"
            _add(tar, f"{key}.json", r if isinstance(r, bytes) else json.dumps(r).encode())


def _mono(lang: str, i: int) -> dict[str, Any]:
    key = f"mono-{lang}-{i:010d}"
    return {
        "key": key,
        "kind": "mono",
        "src_lang": lang,
        "src": f"{lang} sentence {i}",
        "tgt_lang": None,
        "tgt": None,
        "score": None,
        "corpus": "mono",
    }


def _pair(corpus: str, a: str, b: str, i: int) -> dict[str, Any]:
    key = f"{corpus}-{a}{b}-{i:010d}"
    score = 0.9 if i % 4 == 0 else 1.2
    return {
        "key": key,
        "kind": "parallel",
        "src_lang": a,
        "src": f"{a} {i}",
        "tgt_lang": b,
        "tgt": f"{b} {i}",
        "score": score,
        "corpus": corpus,
    }


def write_text_shards(folder: Path, *, weights: bool = True, bad_mono_json: bool = False) -> None:
    """A text-shard output as the stage writes it: one stream per tar range, the manifest's
    counts.streams with [first, last] tar names and the sampling weights (α = 0.3)."""
    folder.mkdir(parents=True, exist_ok=True)
    tars: dict[str, list[list[dict[str, Any] | bytes]]] = {}
    for lang, n in MONO.items():
        recs: list[dict[str, Any] | bytes] = [_mono(lang, i) for i in range(n)]
        chunks = [recs[i : i + 20] for i in range(0, n, 20)]
        tars[f"mono:{lang}"] = chunks
    if bad_mono_json:
        tars["mono:de"][0].insert(3, b"{not json")
    for name, (a, b, n) in PAIRS.items():
        recs = [_pair(name.split(":")[0], a, b, i) for i in range(n)]
        tars[name] = [recs[i : i + 10] for i in range(0, n, 10)]
    streams, files, t = {}, {}, 0
    for name, chunks in tars.items():
        names = []
        for chunk in chunks:
            names.append(f"text-{t:05d}.tar")
            _text_tar(folder / names[-1], chunk)
            files[names[-1]] = {"samples": len(chunk)}
            t += 1
        kind = "mono" if name.startswith("mono") else "parallel"
        langs = [name.split(":")[1]] if kind == "mono" else list(PAIRS[name][:2])
        streams[name] = {"kind": kind, "langs": langs, "in": 0, "out": 0, "shards": [names[0], names[-1]]}
    mono_counts = dict(MONO)
    pair_counts = {ms.canonical_pair(list(v[:2])): v[2] for v in PAIRS.values()}
    extra: dict[str, Any] = {
        "alpha": 0.3,
        "counts": {"mono": mono_counts, "parallel": pair_counts, "streams": streams},
    }
    if weights:
        extra["sampling_weights"] = {
            "mono": sampling.sampling_weights(mono_counts, 0.3),
            "parallel": sampling.sampling_weights(pair_counts, 0.3),
        }
    contract.Manifest("text-shard", "fp", files, 0, 0, {}, 0.0, len(files), extra=extra).save(folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("streams")
    for s in range(4):
        write_images(root / f"shard-{s:05d}.tar", [f"s{s}i{i}" for i in range(6)])
    write_text_shards(root / "text-shard")
    image_urls = [str(root / f"shard-{s:05d}.tar") for s in range(4)]
    return {"root": root, "images": image_urls, "index": ms.text_stream_index(root / "text-shard")}


def collate(items: dict[str, list[Any]]) -> dict[str, Any]:
    """Identity-ish: the items themselves, so batches compare by content."""
    return {"items": items}


def _sources(world: dict[str, Any], **kw: Any) -> ms.Sources:
    return ms.Sources(image_urls=world["images"], text=world["index"], shuffle_buffer=4, **kw)


def _take(it: Any, n: int) -> list[dict[str, Any]]:
    return [next(it)["items"] for _ in range(n)]


def _interleave(ds: ms.MultiStreamBatches, workers: int, n: int) -> list[dict[str, Any]]:
    """What a DataLoader yields: one batch from each worker in turn."""
    its = [ds.batches(w, workers) for w in range(workers)]
    return [next(its[i % workers])["items"] for i in range(n)]


# --- the manifest ---------------------------------------------------------------------------


def test_index_reads_ranges_and_weights(world: dict[str, Any]) -> None:
    index = world["index"]
    assert [Path(u).name for u in index.mono["en"]] == ["text-00000.tar", "text-00001.tar", "text-00002.tar"]
    assert set(index.parallel) == {"en-de", "en-fr", "de-fr"} and len(index.parallel["en-de"]) == 2
    assert index.mono_weights == pytest.approx(sampling.sampling_weights(MONO, 0.3))
    assert index.alpha == 0.3


def test_missing_manifest_or_weights_is_a_stage_error(tmp_path: Path) -> None:
    with pytest.raises(contract.StageError, match="text-shard"):
        ms.text_stream_index(tmp_path / "nowhere")
    write_text_shards(tmp_path / "old", weights=False)
    with pytest.raises(contract.StageError, match="sampling_weights.*re-run text-shard"):
        ms.text_stream_index(tmp_path / "old")


# --- the streams ----------------------------------------------------------------------------


def draws(index: ms.TextIndex, stream: str, n: int, *, seed: int, **options: Any) -> list[Any]:
    """`n` items of one text stream for part 0 of 1, opened as the batches open it."""
    sources = ms.Sources(text=index, **options)
    return ms.open_streams(sources, {stream}, seed, 0, 1, Skips())[stream].take(n)


def test_mono_languages_follow_alpha_weights(world: dict[str, Any]) -> None:
    index, n = world["index"], 5000
    drawn = Counter(lang for _, lang in draws(index, "mono", n, seed=3, shuffle_buffer=4))
    q = index.mono_weights
    for lang, qi in q.items():
        half = Z999 * math.sqrt(n * qi * (1 - qi))
        assert abs(drawn[lang] - n * qi) <= half, (lang, drawn[lang], n * qi)
    p_sw = MONO["sw"] / sum(MONO.values())
    assert drawn["sw"] / n > 2 * p_sw  # flattened: the low-resource language is oversampled


def test_mono_sentence_belongs_to_drawn_language_and_covers_middle_tar(world: dict[str, Any]) -> None:
    items = draws(world["index"], "mono", 800, seed=1, shuffle_buffer=4)
    assert all(text.startswith(lang + " ") for text, lang in items)
    en = {int(t.split()[-1]) for t, lang in items if lang == "en"}
    assert set(range(20, 40)) <= en  # text-00001.tar sits inside the manifest's [first, last] range


def test_parallel_keeps_non_english_pairs_unless_english_only(world: dict[str, Any]) -> None:
    index = world["index"]
    items = draws(index, "parallel", 300, seed=0, shuffle_buffer=4)
    langs = Counter((a, b) for _, a, _, b in items)
    assert langs[("de", "fr")] > 0 and langs[("en", "de")] > 0 and langs[("en", "fr")] > 0
    only = draws(index, "parallel", 300, seed=0, english_only=True)
    assert only and all("en" in (a, b) for _, a, _, b in only)
    scored = draws(index, "parallel", 200, seed=0, min_score=1.0, pair_weights="none")
    assert all(int(text_a.split()[-1]) % 4 for text_a, _, _, _ in scored)  # the 0.9-scored rows are gone


def test_pairs_drawn_in_their_natural_proportions_or_by_alpha(world: dict[str, Any]) -> None:
    """`natural`: a pair is drawn ∝ its lines (the corpus's own mix: the weakly-supervised model's
    WikiMatrix); `alpha`: by the manifest's flattened weights. Each draw switches pairs, so a
    batch mixes them from the start, unlike one stream over all shards."""
    index, n = world["index"], 3000
    counts = index.parallel_counts
    assert counts and all(v > 0 for v in counts.values())
    for weights, q in (
        ("natural", {p: c / sum(counts.values()) for p, c in counts.items()}),
        ("alpha", None),
    ):
        q = q or index.parallel_weights
        drawn = Counter(
            "-".join(sorted((a, b), key=lambda x: (x != "en", x)))
            for _, a, _, b in draws(index, "parallel", n, seed=5, shuffle_buffer=4, pair_weights=weights)
        )
        for pair, qi in q.items():
            half = Z999 * math.sqrt(n * qi * (1 - qi))
            assert abs(drawn[pair] - n * qi) <= half, (weights, pair, drawn[pair], n * qi)


# --- the plan -------------------------------------------------------------------------------


def test_all_streams_every_step_with_plan_sizes(world: dict[str, Any], monkeypatch) -> None:
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    schedule = Schedule.all_streams(image=3, parallel=4, mono=5)
    ds = ms.MultiStreamBatches(_sources(world), schedule, collate, seed=0)
    for items in _take(iter(ds), 6):
        assert {k: len(v) for k, v in items.items()} == {"image": 3, "parallel": 4, "mono": 5}
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"  # data.serial_tokenizers: one thread a loader


def test_ratio_frequencies_accum_and_ranks_agree(world: dict[str, Any]) -> None:
    ratios = {"mlm": 9, "itm": 12, "mrm": 9, "vtlm": 3}
    schedule = Schedule("ratio", dict.fromkeys(ratios, 2), ratios, {t: "image" for t in ratios}, accum=2)
    steps = 3000
    plans = [plan_for(schedule, 7, s) for s in range(steps * 2)]
    assert all(plans[2 * k] == plans[2 * k + 1] for k in range(steps))  # held over the accum micro-steps
    counts = Counter(next(iter(p)) for p in plans[::2])
    total = sum(ratios.values())
    chi2 = sum((counts[t] - steps * r / total) ** 2 / (steps * r / total) for t, r in ratios.items())
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, 99.9%
    assert StepPlan(schedule, 7).at(11) == plans[11]
    # two ranks (different parts) see the same task in each step, with different items
    rank_batches = [
        _take(iter(ms.MultiStreamBatches(_sources(world), schedule, collate, seed=7, rank=r, world=2)), 8)
        for r in range(2)
    ]
    assert (
        [list(b) for b in rank_batches[0]]
        == [list(p) for p in plans[:8]]
        == [list(b) for b in rank_batches[1]]
    )
    assert rank_batches[0] != rank_batches[1]


def test_round_robin_cycles_tasks_per_optimizer_step() -> None:
    schedule = Schedule("round_robin", {"image": 1, "parallel": 2, "mono": 3}, accum=2)
    assert [plan_for(schedule, 0, s) for s in range(6)] == [
        {"image": 1},
        {"image": 1},
        {"parallel": 2},
        {"parallel": 2},
        {"mono": 3},
        {"mono": 3},
    ]


# --- resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["all_streams", "ratio"])
def test_resume_yields_the_uninterrupted_batches(world: dict[str, Any], kind: str) -> None:
    if kind == "all_streams":
        schedule = Schedule.all_streams(image=3, parallel=4, mono=5)
    else:
        schedule = Schedule(
            "ratio", {"image": 5, "parallel": 7, "mono": 9}, {"image": 1, "parallel": 2, "mono": 2}
        )
    decoded: list[str] = []

    def transform(img: Image.Image) -> torch.Tensor:
        decoded.append("x")
        return torch.tensor(img.getpixel((0, 0)))

    def run(start: int, n: int) -> list[dict[str, Any]]:
        ds = ms.MultiStreamBatches(
            _sources(world), schedule, collate, seed=5, start_step=start, image_transform=transform
        )
        return _take(iter(ds), n)

    full = run(0, 30)
    decoded.clear()
    resumed = run(19, 11)  # 19 × 3 images: past two epochs of the 24 image samples
    assert [{k: [x[:2] if k == "image" else x for x in v] for k, v in b.items()} for b in resumed] == [
        {k: [x[:2] if k == "image" else x for x in v] for k, v in b.items()} for b in full[19:]
    ]
    assert all(
        torch.equal(a[2], b[2])
        for r, f in zip(resumed, full[19:])
        for a, b in zip(r.get("image", []), f.get("image", []))
    )
    assert len(decoded) == sum(len(b.get("image", [])) for b in resumed)  # the fast-forward decoded nothing


def test_resume_repeats_each_samples_augmentation(world: dict[str, Any]) -> None:
    """An augmenting transform gets draws seeded by (seed, step, key): a resumed run's images are
    the uninterrupted run's, and a sample seen again in a later epoch is augmented anew."""
    schedule = Schedule.all_streams(image=3, parallel=1, mono=1)
    aug = AugmentedSquare(8, **AugmentSpec().model_dump())

    def run(start: int, n: int) -> list[list[Any]]:
        ds = ms.MultiStreamBatches(
            _sources(world), schedule, collate, seed=5, start_step=start, image_transform=aug
        )
        return [b["image"] for b in _take(iter(ds), n)]

    full, resumed = run(0, 20), run(13, 7)
    pairs = [(a, b) for r, f in zip(resumed, full[13:]) for a, b in zip(r, f)]
    assert len(pairs) == 21 and all(a[0] == b[0] and torch.equal(a[2], b[2]) for a, b in pairs)
    seen: dict[str, list[torch.Tensor]] = {}
    for step in full:
        for key, _, image in step:
            seen.setdefault(key, []).append(image)
    again = [images for images in seen.values() if len(images) > 1]
    assert again and sum(not torch.equal(images[0], images[1]) for images in again) > len(again) / 2


def test_worker_step_ownership() -> None:
    assert [next(iter(owned_steps(0, w, 2))) for w in range(2)] == [0, 1]
    it = owned_steps(7, 0, 3)
    assert [next(it) for _ in range(3)] == [7, 10, 13]
    assert lane_of(7, 0, 3) == 1 and lane_of(7, 2, 3) == 0  # the lane is the step's, not the process's


@pytest.mark.parametrize("start", [6, 9])
def test_resume_with_two_workers(world: dict[str, Any], start: int) -> None:
    schedule = Schedule.all_streams(image=2, parallel=3, mono=3)

    def ds(s: int) -> ms.MultiStreamBatches:
        return ms.MultiStreamBatches(_sources(world), schedule, collate, seed=2, start_step=s)

    full = _interleave(ds(0), 2, 16)
    assert full[0] != full[1]  # the workers read distinct streams
    assert _interleave(ds(start), 2, 16 - start) == full[start:]


def test_resume_through_a_real_dataloader(world: dict[str, Any]) -> None:
    schedule = Schedule.all_streams(image=2, parallel=2, mono=2)

    def run(start: int, n: int) -> list[dict[str, Any]]:
        ds = ms.MultiStreamBatches(_sources(world), schedule, collate, seed=4, start_step=start)
        dl = torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=2, worker_init_fn=forget_parent_thread_exits
        )
        it = iter(dl)
        try:
            return _take(it, n)
        finally:
            del it

    assert run(3, 5) == run(0, 8)[3:]


def test_fast_forward_skips_whole_epochs_arithmetically(world: dict[str, Any]) -> None:
    """A stream owning whole shards reads about two epochs to resume, however far the position."""
    reads = Counter()

    def parse(sample: dict[str, Any], skips: Skips) -> Any:
        reads["n"] += 1
        return ms._image_item(sample, skips)

    def source() -> ms._Source:
        return ms._Source(
            "image", world["images"], parse, seed=1, part=1, parts=2, shuffle_buffer=4, skips=Skips()
        )

    live = source()
    expected = [live.next_item()[0] for _ in range(12 * 10 + 5)][-5:]  # 12 items per epoch for this part
    reads.clear()
    jumped = source()
    jumped.skip(12 * 10)
    assert [jumped.next_item()[0] for _ in range(5)] == expected
    assert reads["n"] <= 2 * 12 + 5


# --- bad samples ----------------------------------------------------------------------------


def test_each_dataloader_worker_says_whose_skip_count_a_batch_carries(tmp_path: Path) -> None:
    """Each worker process counts its own skips; the batch says which worker's count it carries,
    so the training loop can sum the workers' latest counts (loop.py's `skipped`)."""
    write_images(tmp_path / "shard-00000.tar", [f"k{i}" for i in range(6)], bad_json={"k1"}, bad_image={"k4"})
    write_text_shards(tmp_path / "text", bad_mono_json=True)
    sources = ms.Sources(
        image_urls=[str(tmp_path / "shard-00000.tar")],
        text=ms.text_stream_index(tmp_path / "text"),
        shuffle_buffer=2,
    )
    schedule = Schedule.all_streams(image=2, parallel=1, mono=40)
    ds = ms.MultiStreamBatches(sources, schedule, collate, seed=0, image_transform=lambda im: im.size)
    it = iter(
        torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=2, worker_init_fn=forget_parent_thread_exits
        )
    )
    got = [next(it) for _ in range(8)]
    del it
    assert [int(b["loader_worker"]) for b in got] == [0, 1] * 4
    latest = {int(b["loader_worker"]): int(b["skipped"]) for b in got}
    assert ds.skips.counts == Counter()  # this process read nothing: the counts live in the workers
    assert all(n >= 1 for n in latest.values())  # both workers read the bad mono JSON


def test_bad_json_and_bad_image_are_skipped_and_counted(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(6)]
    write_images(tmp_path / "shard-00000.tar", keys, bad_json={"k1"}, bad_image={"k4"})
    write_text_shards(tmp_path / "text", bad_mono_json=True)
    sources = ms.Sources(
        image_urls=[str(tmp_path / "shard-00000.tar")],
        text=ms.text_stream_index(tmp_path / "text"),
        shuffle_buffer=2,
    )
    ds = ms.MultiStreamBatches(
        sources,
        Schedule.all_streams(image=2, parallel=1, mono=40),
        collate,
        seed=0,
        image_transform=lambda im: im.size,
    )
    it = iter(ds)
    batches = [next(it) for _ in range(6)]  # 12 image items: more than two epochs of the 5 good records
    seen = {key for b in batches for key, _, _ in b["items"]["image"]}
    assert seen == {"k0", "k2", "k3", "k5"}
    assert ds.skips.counts["bad_json"] >= 2 and ds.skips.counts["image_decode_error"] >= 2
    assert ds.skips.counts["bad_text_json"] >= 1
    assert int(batches[-1]["skipped"]) == sum(ds.skips.counts.values())
    assert any(len(b["items"]["image"]) < 2 for b in batches)  # a bad image shortens the batch, no refill
    skips = Skips()
    assert (
        ms.decode_image(b"junk", lambda im: im, skips, "x") is None
        and skips.counts["image_decode_error"] == 1
    )
