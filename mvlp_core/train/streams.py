"""Multi-stream pretraining data: image records, parallel pairs and monolingual sentences as
separate endless streams, combined per step by a deterministic plan (`mvlp_core.train.plan`).

Families other than UniGen train on several streams at once with fixed per-step shares (the
weakly-supervised mVLP: 512 images, 2,048 pairs, 2,048 sentences a step) or one task per step
(UC², M³P), and read monolingual text sampled by language with the text-shard stage's weights
q ∝ p^α. `data.py`'s loader mixes one stream and stays as it is; this module reuses its readers
(`raw_samples`: shards split by part, reshuffled each epoch, a shuffle buffer; `Skips`).

Every stream is deterministic given (seed, part, parts): part = rank × workers + lane (see
`plan.lane_of`). Resume (`start_step=S`) is exact by fast-forwarding: the plan says how many items
each stream gave up to S, and each stream skips that many raw items, parsing their JSON (to know
which samples count) but never decoding an image. Once a stream has read one whole epoch of a
part that owns whole shards, its items per epoch are known and further whole epochs are skipped
by arithmetic, so a resume reads at most about two epochs per stream.

Memory: one shuffle buffer per open source (the image stream, each parallel pair, each
monolingual language) plus one batch, whatever the data size.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from mvlp_core import contract
from mvlp_core.model.parts.images import decoded
from mvlp_core.sampling import canonical_pair
from mvlp_core.train.data import Skips, raw_samples, serial_tokenizers
from mvlp_core.train.plan import Schedule, lane_of, owned_steps, plan_for

ImageItem = tuple[str, dict[str, Any], Any]  # (key, record, jpg bytes or the transformed image)
PairItem = tuple[str, str, str, str]  # (text_a, lang_a, text_b, lang_b)
MonoItem = tuple[str, str]  # (text, lang)
_END = object()
_TAR = re.compile(r"^(?P<prefix>.*?)(?P<num>\d+)(?P<suffix>\.tar)$")
RERUN = "mvlp run SPEC --only text-shard --force"


def _derive(*labels: object) -> int:
    """A 64-bit seed from labels; stable across processes (no hash() randomisation)."""
    return int.from_bytes(hashlib.blake2b(repr(labels).encode(), digest_size=8).digest(), "little")


# ---------------------------------------------------------------------------------------------
# The text-shard manifest


@dataclass(frozen=True)
class TextIndex:
    """The text shards by stream: monolingual tar URLs per language, parallel tar URLs per pair
    (canonical, en-xx or alphabetical), and the manifest's sampling weights (q ∝ p^α)."""

    folder: str
    mono: dict[str, list[str]]
    parallel: dict[str, list[str]]
    mono_weights: dict[str, float]
    parallel_weights: dict[str, float]
    alpha: float | None = None
    parallel_counts: dict[str, int] = field(default_factory=dict)  # lines kept per pair


def _expand(shards: list[str], stream: str, where: str) -> list[str]:
    """A stream's tars: the manifest writes [first, last] of a consecutive range; other lists
    (one name, or names that are no range) are taken as they are."""
    if len(shards) != 2:
        return list(shards)
    first, last = (_TAR.match(s) for s in shards)
    if not first or not last or (first["prefix"], first["suffix"]) != (last["prefix"], last["suffix"]):
        return list(shards)
    lo, hi, width = int(first["num"]), int(last["num"]), len(first["num"])
    if hi < lo:
        raise contract.StageError(
            f"{where}: stream {stream} has shards {shards} (last before first); re-run text-shard ({RERUN})"
        )
    return [f"{first['prefix']}{i:0{width}d}{first['suffix']}" for i in range(lo, hi + 1)]


def text_stream_index(text_shard_dir: str | Path) -> TextIndex:
    """Read `<text_shard_dir>/_manifest.json`: every stream's tars (grouped per language and per
    pair) and the sampling weights. A missing manifest, or one without weights or streams, is a
    StageError naming the fix (run or re-run the text-shard stage)."""
    folder = Path(text_shard_dir)
    where = f"text shards at {folder}"
    try:
        manifest = contract.Manifest.load(folder)
    except (TypeError, ValueError) as err:
        raise contract.StageError(
            f"{where}: {contract.MANIFEST} is unreadable ({err}); re-run text-shard ({RERUN})"
        ) from None
    if manifest is None:
        raise contract.StageError(
            f"{where}: no {contract.MANIFEST}, so the text-shard stage has not finished there; run it "
            "(mvlp run SPEC --only text-shard) or point the trainer at its output folder"
        )
    extra = manifest.extra or {}
    weights = extra.get("sampling_weights")
    if not isinstance(weights, dict) or not {"mono", "parallel"} <= set(weights):
        raise contract.StageError(
            f"{where}: the manifest has no sampling_weights (mono and parallel), written by an older "
            f"text-shard; re-run text-shard ({RERUN})"
        )
    streams = extra.get("streams") or (extra.get("counts") or {}).get("streams")
    if not isinstance(streams, dict):
        raise contract.StageError(
            f"{where}: the manifest lists no streams and their shards; re-run text-shard ({RERUN})"
        )
    mono: dict[str, list[str]] = {}
    parallel: dict[str, list[str]] = {}
    for name, entry in sorted(streams.items()):
        tars = _expand(list(entry.get("shards") or []), name, where)
        missing = [t for t in tars if manifest.files and t not in manifest.files]
        if missing:
            raise contract.StageError(
                f"{where}: stream {name} names {missing[0]}, which the manifest's files lack; "
                f"re-run text-shard ({RERUN})"
            )
        urls = [str(folder / t) for t in tars]
        if entry.get("kind") == "mono":
            mono.setdefault(entry["langs"][0], []).extend(urls)
        elif entry.get("kind") == "parallel":
            parallel.setdefault(canonical_pair(entry["langs"]), []).extend(urls)
    for kind, by_key in (("mono", mono), ("parallel", parallel)):
        empty = [k for k, q in weights[kind].items() if q > 0 and not by_key.get(k)]
        if empty:
            raise contract.StageError(
                f"{where}: {kind} {empty[0]} has sampling weight {weights[kind][empty[0]]:.3f} but no "
                f"shards in the manifest; re-run text-shard ({RERUN})"
            )
    counts = (extra.get("counts") or {}).get("parallel") or {}
    return TextIndex(
        str(folder),
        mono,
        parallel,
        dict(weights["mono"]),
        dict(weights["parallel"]),
        extra.get("alpha"),
        {canonical_pair(tuple(k.split("-"))): int(n) for k, n in counts.items()},
    )


# ---------------------------------------------------------------------------------------------
# Parsing raw samples into items (None: not an item of this stream)


def _image_item(sample: dict[str, Any], skips: Skips) -> ImageItem | None:
    key = sample.get("__key__")
    try:
        record = json.loads(sample["json"])
        if not isinstance(record, dict):
            raise TypeError(f"record is a {type(record).__name__}, not an object")
    except (KeyError, TypeError, ValueError) as err:
        skips.add(key, "bad_json", repr(err))
        return None
    if not sample.get("jpg"):
        skips.add(key, "missing_image", "no .jpg member")
        return None
    return key, record, sample["jpg"]


def _text_record(sample: dict[str, Any], skips: Skips) -> dict[str, Any] | None:
    try:
        record = json.loads(sample["json"])
        if not isinstance(record, dict):
            raise TypeError(f"record is a {type(record).__name__}, not an object")
        return record
    except (KeyError, TypeError, ValueError) as err:
        skips.add(sample.get("__key__"), "bad_text_json", repr(err))
        return None


def _pair_parser(min_score: float | None, english_only: bool) -> Callable[..., PairItem | None]:
    def parse(sample: dict[str, Any], skips: Skips) -> PairItem | None:
        r = _text_record(sample, skips)
        if r is None or r.get("kind") != "parallel":
            return None
        fields = (r.get("src"), r.get("src_lang"), r.get("tgt"), r.get("tgt_lang"))
        if not all(isinstance(f, str) and f for f in fields):
            skips.add(
                sample.get("__key__"), "bad_text_json", "parallel record lacks src/tgt text or language"
            )
            return None
        if min_score is not None and (r.get("score") or 0) < min_score:
            return None
        if english_only and "en" not in (r["src_lang"], r["tgt_lang"]):
            return None
        return fields  # type: ignore[return-value]

    return parse


def _mono_item(sample: dict[str, Any], skips: Skips) -> MonoItem | None:
    r = _text_record(sample, skips)
    if r is None or r.get("kind") != "mono":
        return None
    text, lang = r.get("src") or r.get("text"), r.get("src_lang") or r.get("lang")
    if not (isinstance(text, str) and text and isinstance(lang, str) and lang):
        skips.add(sample.get("__key__"), "bad_text_json", "mono record lacks text or language")
        return None
    return text, lang


def decode_image(
    jpg_bytes: bytes | None, transform: Callable[[Image.Image], Any], skips: Skips, key: str | None
) -> Any:
    """`transform` of the decoded RGB image, or None (counted as `image_decode_error`) when the bytes
    are no readable image: a bad image costs one item, never the run."""
    try:
        return decoded(jpg_bytes, transform)  # type: ignore[arg-type]
    except (TypeError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        skips.add(key, "image_decode_error", repr(err))
        return None


# ---------------------------------------------------------------------------------------------
# Endless sources with exact fast-forward


class _Source:
    """The endless items of one set of shards for one part: epoch e is `raw_samples` with a seed
    from (seed, name, e) (the same for every part, so parts split one order) mapped by `parse`.
    `skip(n)` defers n items; they are read (never decoded) or skipped by whole epochs before the
    next `next_item()`."""

    def __init__(
        self,
        name: str,
        urls: list[str],
        parse: Callable[..., Any],
        *,
        seed: int,
        part: int,
        parts: int,
        shuffle_buffer: int,
        skips: Skips,
    ):
        if not urls:
            raise contract.StageError(f"multi-stream loader: stream {name} has no shards")
        self.name, self.urls, self.parse = name, list(urls), parse
        self.seed, self.part, self.parts, self.buffer, self.skips = seed, part, parts, shuffle_buffer, skips
        self.by_shard = len(self.urls) >= parts  # as raw_samples: then every epoch has the same samples
        self.epoch, self.in_epoch, self.pending = 0, 0, 0
        self.epoch_len: int | None = None
        self._items: Iterator[Any] | None = None

    def _epoch_items(self) -> Iterator[Any]:
        seed = _derive(self.seed, self.name, self.epoch)
        for sample in raw_samples(self.urls, self.part, self.parts, seed, self.buffer, self.skips):
            item = self.parse(sample, self.skips)
            if item is not None:
                yield item

    def _roll(self) -> None:
        if self._items is not None:
            self._items.close()  # type: ignore[attr-defined]
        self._items, self.epoch, self.in_epoch = None, self.epoch + 1, 0

    def _read(self) -> Any:
        while True:
            if self._items is None:
                self._items = self._epoch_items()
            item = next(self._items, _END)
            if item is not _END:
                self.in_epoch += 1
                return item
            if self.in_epoch == 0:
                raise contract.StageError(
                    f"multi-stream loader: stream {self.name} has no usable item for part {self.part} of "
                    f"{self.parts} (epoch {self.epoch}); check its shards and filters (min_score, "
                    "english_only), or use fewer ranks/workers than it has samples"
                )
            if self.by_shard:
                self.epoch_len = self.in_epoch
            self._roll()

    def skip(self, n: int) -> None:
        self.pending += n

    def next_item(self) -> Any:
        while self.pending:
            if self.epoch_len is not None:
                if self._items is not None and self.in_epoch >= self.epoch_len:
                    self._roll()
                if self._items is None and self.pending >= self.epoch_len:
                    whole = self.pending // self.epoch_len
                    self.epoch, self.pending = self.epoch + whole, self.pending - whole * self.epoch_len
                    continue
            self._read()
            self.pending -= 1
        return self._read()

    def take(self, n: int) -> list[Any]:
        return [self.next_item() for _ in range(n)]


class _Weighted:
    """Items drawn by key (language or pair) with probability q: each draw picks a key with this
    part's generator, then takes the next item of that key's own source. A step's draws are made
    with one `random(n)` call in both `take` and `skip`, so a fast-forward replays them exactly."""

    def __init__(self, sources: dict[str, _Source], weights: dict[str, float], seed: int):
        self.keys = [k for k in sorted(weights) if weights[k] > 0 and k in sources]
        if not self.keys:
            raise contract.StageError(
                f"multi-stream loader: no stream with a positive weight among {sorted(weights)}"
            )
        cum = np.cumsum([weights[k] for k in self.keys], dtype=np.float64)
        self.cum = cum / cum[-1]
        self.cum[-1] = 1.0
        self.sources = [sources[k] for k in self.keys]
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def _picks(self, n: int) -> np.ndarray:
        return np.searchsorted(self.cum, self.rng.random(n), side="right")

    def take(self, n: int) -> list[Any]:
        return [self.sources[i].next_item() for i in self._picks(n).tolist()]

    def skip(self, n: int) -> None:
        for source, count in zip(
            self.sources, np.bincount(self._picks(n), minlength=len(self.sources)).tolist()
        ):
            source.skip(count)


# ---------------------------------------------------------------------------------------------
# The three streams


@dataclass(frozen=True)
class Sources:
    """Where the streams read: image shard URLs, the text index, and the stream options
    (`english_only`: only pairs with an English side, for families that need one; `pair_weights`:
    how a pair is drawn: `alpha`, the manifest's q ∝ p^α; `natural`, ∝ the pair's lines, the
    corpus's own mix; `none`, one stream over all parallel shards)."""

    image_urls: list[str] = field(default_factory=list)
    text: TextIndex | None = None
    shuffle_buffer: int = 1000
    min_score: float | None = None
    english_only: bool = False
    pair_weights: Literal["alpha", "natural", "none"] = "alpha"


def _image_stream(urls: list[str], seed: int, part: int, parts: int, buffer: int, skips: Skips) -> _Source:
    return _Source(
        "image", urls, _image_item, seed=seed, part=part, parts=parts, shuffle_buffer=buffer, skips=skips
    )


def _mono_stream(index: TextIndex, seed: int, part: int, parts: int, buffer: int, skips: Skips) -> _Weighted:
    sources = {
        lang: _Source(
            f"mono:{lang}",
            urls,
            _mono_item,
            seed=seed,
            part=part,
            parts=parts,
            shuffle_buffer=buffer,
            skips=skips,
        )
        for lang, urls in index.mono.items()
        if index.mono_weights.get(lang, 0) > 0
    }
    return _Weighted(sources, index.mono_weights, _derive(seed, "mono-draws", part))


def _parallel_stream(
    index: TextIndex,
    seed: int,
    part: int,
    parts: int,
    buffer: int,
    skips: Skips,
    *,
    min_score: float | None,
    english_only: bool,
    weights: str,
) -> _Source | _Weighted:
    parse = _pair_parser(min_score, english_only)
    pairs = {p: urls for p, urls in index.parallel.items() if not english_only or "en" in p.split("-")}
    if not pairs:
        raise contract.StageError(
            f"multi-stream loader: no parallel shards{' with an English side' if english_only else ''} in {index.folder}"
        )
    if weights == "none":
        urls = [u for p in sorted(pairs) for u in pairs[p]]
        return _Source(
            "parallel", urls, parse, seed=seed, part=part, parts=parts, shuffle_buffer=buffer, skips=skips
        )
    sources = {
        p: _Source(
            f"parallel:{p}",
            urls,
            parse,
            seed=seed,
            part=part,
            parts=parts,
            shuffle_buffer=buffer,
            skips=skips,
        )
        for p, urls in pairs.items()
    }
    if weights == "natural":
        if not any(index.parallel_counts.get(p) for p in pairs):
            raise contract.StageError(
                f"multi-stream loader: the text-shard manifest at {index.folder} has no per-pair line "
                f"counts; re-run text-shard ({RERUN})"
            )
        total = sum(index.parallel_counts.get(p, 0) for p in pairs)
        drawn = {p: index.parallel_counts.get(p, 0) / total for p in pairs}
    else:
        drawn = {p: index.parallel_weights.get(p, 0.0) for p in pairs}
    return _Weighted(sources, drawn, _derive(seed, "parallel-draws", part))


def open_streams(
    sources: Sources, used: set[str], seed: int, part: int, parts: int, skips: Skips
) -> dict[str, _Source | _Weighted]:
    """The streams a schedule reads, for one part; a stream without data is a StageError."""
    out: dict[str, _Source | _Weighted] = {}
    buffer = sources.shuffle_buffer
    if "image" in used:
        if not sources.image_urls:
            raise contract.StageError(
                "multi-stream loader: the schedule reads images but no image shards were given"
            )
        out["image"] = _image_stream(sources.image_urls, seed, part, parts, buffer, skips)
    if used & {"parallel", "mono"} and sources.text is None:
        raise contract.StageError(
            "multi-stream loader: the schedule reads text but no text index was given; pass "
            "text_stream_index(<text-shard output folder>)"
        )
    if "parallel" in used:
        out["parallel"] = _parallel_stream(
            sources.text,
            seed,
            part,
            parts,
            buffer,
            skips,  # type: ignore[arg-type]
            min_score=sources.min_score,
            english_only=sources.english_only,
            weights=sources.pair_weights,
        )
    if "mono" in used:
        out["mono"] = _mono_stream(sources.text, seed, part, parts, buffer, skips)  # type: ignore[arg-type]
    return out


class MultiStreamBatches(torch.utils.data.IterableDataset):
    """Batches for one rank (and DataLoader worker): step s draws `plan_for(schedule, seed, s)`
    items from each stream and yields `collate({task: items})` with `skipped` (this process's
    skipped samples so far) and `loader_worker` (whose count it is). With `image_transform`, image items carry the transformed image
    instead of the jpg bytes and a bad image is dropped from the batch (counted); the plan's
    consumption stays fixed, which is what keeps resume exact.

    `start_step=S` yields exactly the batches an uninterrupted run yields from step S on (same
    seed, ranks and number of DataLoader workers): each stream fast-forwards by the items the plan
    gave it before S (see the module docstring)."""

    def __init__(
        self,
        sources: Sources,
        schedule: Schedule,
        collate: Callable[[dict[str, list[Any]]], dict[str, Any]],
        *,
        seed: int,
        rank: int = 0,
        world: int = 1,
        start_step: int = 0,
        image_transform: Callable[[Image.Image], Any] | None = None,
    ):
        super().__init__()
        if not 0 <= rank < world or start_step < 0:
            raise ValueError(f"rank {rank} of {world}, start_step {start_step}")
        self.sources, self.schedule, self.collate = sources, schedule, collate
        self.seed, self.rank, self.world, self.start_step = seed, rank, world, start_step
        self.image_transform = image_transform
        self.skips = Skips()

    def _transform(self, step: int, key: str | None) -> Callable[[Image.Image], Any]:
        """The image transform for one item; a random one (`needs_rng`: augmentation) gets draws
        seeded by the run's seed, the step and the sample's key, so a resumed run repeats them."""
        transform = self.image_transform
        if getattr(transform, "needs_rng", False):
            return functools.partial(transform, rng=random.Random(f"{self.seed}:{step}:{key}"))
        return transform

    def __iter__(self) -> Iterator[dict[str, Any]]:
        serial_tokenizers()
        info = torch.utils.data.get_worker_info()
        return self.batches(*((info.id, info.num_workers) if info else (0, 1)))

    def batches(self, worker: int = 0, workers: int = 1) -> Iterator[dict[str, Any]]:
        """What DataLoader worker `worker` of `workers` yields: steps start+worker, +workers, …,
        drawn from the lane's streams (part = rank × workers + lane)."""
        lane = lane_of(self.start_step, worker, workers)
        schedule = self.schedule
        streams = open_streams(
            self.sources,
            schedule.used_streams(),
            self.seed,
            self.rank * workers + lane,
            self.world * workers,
            self.skips,
        )
        for step in range(lane, self.start_step + worker, workers):  # the lane's steps before the start
            for task, n in plan_for(schedule, self.seed, step).items():
                streams[schedule.stream_of(task)].skip(n)
        for step in owned_steps(self.start_step, worker, workers):
            items: dict[str, list[Any]] = {}
            for task, n in plan_for(schedule, self.seed, step).items():
                stream = schedule.stream_of(task)
                got = streams[stream].take(n)
                if stream == "image" and self.image_transform is not None:
                    got = [
                        (key, record, image)
                        for key, record, jpg in got
                        if (image := decode_image(jpg, self._transform(step, key), self.skips, key))
                        is not None
                    ]
                items[task] = got
            batch = self.collate(items)
            batch["skipped"] = torch.tensor(sum(self.skips.counts.values()))
            batch["loader_worker"] = torch.tensor(worker)
            yield batch


def content_generator(seed: int, rank: int, items: dict[str, list]) -> torch.Generator:
    """A generator for a batch's draws (masks, languages, prefixes) seeded by its content: a
    resumed run draws for a batch what the first run did."""
    first = {k: repr(v[0][:2]) for k, v in items.items() if v}
    digest = hashlib.blake2b(repr((seed, rank, sorted(first.items()))).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))
