"""The data pretraining eats: WebDataset shards -> mixed `Example`s -> collated batches.

One loader per Ray Train worker (and per DataLoader process inside it): shards are split by rank
when there are enough of them, single samples otherwise (the demo has 2 shards for 2 ranks ×
maybe several loader processes). The stream is endless: each pass over the data reshuffles with
a new seed. A bad sample (undecodable JPEG, bad JSON, missing caption) is skipped and counted in
`Skips`, never fatal. Shards are read by mvlp_core/tarstream.py (webdataset's grouping without
tarfile's per-member cost) and shuffled with webdataset 0.2's buffer; see
benchmarks/bench_loader.py for why not Ray Data. Shards are local paths or s3:// / gs:// URLs
(`pretrain.loader.read_from: published`), opened through `mvlp_core.storage` and streamed one shard at a time with sequential
ranged reads: nothing is downloaded first.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from PIL import Image

from mvlp_core import contract, storage, tarstream
from mvlp_core.forked import forget_parent_thread_exits
from mvlp_core.model.parts.images import decoded
from mvlp_core.model.unigen import Example
from mvlp_core.spec import MixSpec
from mvlp_core.train.codeswitch import code_switch, tables_from_record
from mvlp_core.train.plan import lane_of

MAX_LOGGED_SKIPS = 20  # a loader process's first skips are logged with their key and cause
log = logging.getLogger(__name__)
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class Skips:
    """Samples one loader process skipped, by reason. Its first MAX_LOGGED_SKIPS are logged as
    warnings naming the sample and the cause (in a Ray Train worker's log); the rest are counted
    only, and the training loop logs every process's count as `skipped` in the metrics. The shard
    stage rejects bad samples with reasons before training; these are what got past it (shards
    written elsewhere, damaged since)."""

    counts: Counter = field(default_factory=Counter)

    def add(self, key: str | None, reason: str, detail: str = "") -> None:
        self.counts[reason] += 1
        n = self.counts.total()
        if n <= MAX_LOGGED_SKIPS:
            log.warning(
                "training loader skipped %s: %s %s", key or "a shard's remainder", reason, detail[:200]
            )
        if n == MAX_LOGGED_SKIPS:
            log.warning("training loader: further skips are counted only (`skipped` in the metrics)")

    def handler(self, exn: Exception) -> bool:
        """Loader handler: an unreadable shard or tar member is counted and the stream goes on."""
        self.add(None, "tar_read_error", str(exn))
        return True


def shard_urls(folder: Path, pattern: str) -> list[str]:
    return [str(p) for p in sorted(Path(folder).glob(pattern))]


def tar_samples(urls: list[str], handler: Callable[[Exception], bool]) -> Iterator[dict[str, Any]]:
    """The samples of the shards at `urls` in order ({"__key__", "__url__", ext: bytes}, grouped as
    webdataset groups them; mvlp_core/tarstream.py), each shard opened through
    `storage.open_input`: a local path with open(), an s3:// or gs:// object streamed with ranged
    reads (one shard at a time, never downloaded whole); .tar.gz/.tgz decompressed on the way. A
    shard that cannot be opened or read to its end goes to `handler`, which counts it, and the
    stream moves on to the next; a run-level failure (credentials, access, no bucket) is a
    StageError and stops the loader."""
    for url in urls:
        gzipped = url.endswith((".gz", ".tgz"))
        try:
            stream = storage.open_input(url, compression="gzip" if gzipped else None, what="pretrain: shard")
        except contract.StageError:
            raise
        except Exception as exn:  # noqa: BLE001 - the handler decides, as webdataset's opener
            exn.args = (*exn.args, url)
            if handler(exn):
                continue
            return
        try:
            yield from tarstream.samples(stream, url, handler)
        except contract.StageError:
            raise
        except Exception as exn:  # noqa: BLE001 - a corrupt or cut-short shard: the handler decides
            exn.args = (*exn.args, url)
            if not handler(exn):
                return
        finally:
            stream.close()


def _take(items: Iterable[Any], part: int, parts: int) -> Iterator[Any]:
    for i, item in enumerate(items):
        if i % parts == part:
            yield item


def raw_samples(
    urls: list[str], part: int, parts: int, seed: int, shuffle_buffer: int, skips: Skips
) -> Iterator[dict[str, Any]]:
    """One pass of {"__key__", "jpg"?, "json"} dicts for this part (rank × loader process)."""
    by_shard = len(urls) >= parts
    own = list(_take(urls, part, parts)) if by_shard else list(urls)
    random.Random(seed).shuffle(own)
    stream: Iterator[dict[str, Any]] = iter(tar_samples(own, skips.handler))
    if not by_shard:
        stream = _take(stream, part, parts)
    if shuffle_buffer > 1:
        stream = wds.filters._shuffle(stream, shuffle_buffer, min(shuffle_buffer, 100), random.Random(seed))
    yield from stream


def code_switched(
    text: str, record: dict[str, Any], languages: list[str], ratio: float, rng: random.Random
) -> str:
    """`text` with a share of its words swapped for the translations the align stage linked to them
    in this record (M³P's code-switching), so the text encoder learns that a word and its
    translation play the same part; as is when the record holds no links for `languages`."""
    try:
        tables = {lang: t for lang, t in tables_from_record(record).items() if lang in languages}
    except (KeyError, IndexError, TypeError):
        return text
    if not tables:
        return text
    switched = code_switch(
        _WORD.findall(text), tables, ratio=ratio, seed=rng.randrange(1 << 30), key=str(record.get("key", ""))
    )
    return " ".join(switched.words)


def image_example(
    sample: dict[str, Any],
    mix: MixSpec,
    languages: list[str],
    transform: Callable,
    rng: random.Random,
    skips: Skips,
    decode: bool = True,
) -> Example | None:
    """One image record -> one task: [trans] with a random CC6L caption, [qus] or [cap]. With
    `mix.code_switch`, English encoder texts (question, contrastive caption) may be code-switched.
    `decode=False` makes the same draws without decoding the image (image None): how a resumed
    run fast-forwards to where its checkpoint stood."""
    key = sample.get("__key__")
    try:
        record = json.loads(sample["json"])
        en = record["captions"]["en"]
    except (KeyError, TypeError, ValueError) as err:
        skips.add(key, "bad_json", repr(err))
        return None
    image = None
    try:
        if decode:
            image = decoded(sample["jpg"], transform)
    except (KeyError, TypeError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        skips.add(key, "image_decode_error", repr(err))
        return None

    def switch(text: str) -> str:
        if mix.code_switch and rng.random() < mix.code_switch:
            return code_switched(text, record, languages, mix.code_switch_ratio, rng)
        return text

    # the multilingual share first, so that it is the spec's share of the records (UniGen: 10% of
    # CC6L), not of those left after [qus]
    other = [lang for lang in languages if record["captions"].get(lang)]
    if other and rng.random() < mix.multilingual_fraction:
        lang = rng.choice(other)
        text = record["captions"][lang]
        return Example("trans", image, text, lang, en, caption=text)
    qa = record.get("qa") or []
    if qa and rng.random() < mix.qus / ((mix.cap + mix.qus) or 1):
        pair = rng.choice(qa)
        return Example("qus", image, switch(pair["question"]), "en", pair["answer"], caption=switch(en))
    return Example("cap", image, "", "en", en, caption=switch(en))


def text_example(sample: dict[str, Any], mix: MixSpec, skips: Skips) -> Example | None:
    """A parallel pair -> text-only [trans] into English, the English side also as its `caption`
    (what the cross-lingual consistency loss reads); monolingual records are not UniGen's."""
    key = sample.get("__key__")
    try:
        r = json.loads(sample["json"])
        if r["kind"] != "parallel":
            return None
        if mix.min_pair_score is not None and (r.get("score") or 0) < mix.min_pair_score:
            return None
        if r["tgt_lang"] == "en":
            return Example("trans", None, r["src"], r["src_lang"], r["tgt"], caption=r["tgt"])
        if r["src_lang"] == "en":
            return Example("trans", None, r["tgt"], r["tgt_lang"], r["src"], caption=r["src"])
        return None
    except (KeyError, TypeError, ValueError) as err:
        skips.add(key, "bad_text_json", repr(err))
        return None


@dataclass
class LoaderConfig:
    image_urls: list[str]
    text_urls: list[str]
    mix: MixSpec
    languages: list[str]
    batch_size: int
    shuffle_buffer: int
    seed: int


def examples(
    cfg: LoaderConfig, transform: Callable, part: int, parts: int, skips: Skips, skip: int = 0
) -> Iterator[Example]:
    """Endless mixed stream: image records (one task each) interleaved with text pairs. The first
    `skip` examples are drawn without decoding their images and dropped: the stream then stands
    where a run that trained on them stood (an image that fails to decode inside that stretch,
    which the shard stage's decoded-and-re-encoded images practically never do, shifts it by one)."""
    rng = random.Random(f"{cfg.seed}-{part}-0")
    languages = cfg.mix.languages or cfg.languages
    decode = [skip == 0]

    def images() -> Iterator[Example]:
        epoch = 0
        while True:
            n = 0
            for s in raw_samples(
                cfg.image_urls, part, parts, cfg.seed * 100003 + epoch, cfg.shuffle_buffer, skips
            ):
                ex = image_example(s, cfg.mix, languages, transform, rng, skips, decode[0])
                if ex is not None:
                    n += 1
                    yield ex
            if n == 0:
                raise RuntimeError(f"loader part {part}/{parts}: no usable image sample in {cfg.image_urls}")
            epoch += 1

    def texts() -> Iterator[Example]:
        epoch = 0
        while True:
            n = 0
            for s in raw_samples(
                cfg.text_urls, part, parts, cfg.seed * 100003 + epoch + 50001, cfg.shuffle_buffer, skips
            ):
                ex = text_example(s, cfg.mix, skips)
                if ex is not None:
                    n += 1
                    yield ex
            if n == 0:
                return
            epoch += 1

    image_it = images()
    text_it = texts() if cfg.text_urls and cfg.mix.text_pairs > 0 else iter(())

    def mixed() -> Iterator[Example]:
        while True:
            if rng.random() < cfg.mix.text_pairs:
                ex = next(text_it, None)
                if ex is not None:
                    yield ex
                    continue
            yield next(image_it)

    stream = mixed()
    for _ in range(skip):
        next(stream)
    decode[0] = True
    yield from stream


def serial_tokenizers() -> None:
    """Tokenize on this process's own thread: a loader is one process per core (a rank, or each of
    its DataLoader workers), and Hugging Face's fast tokenizers otherwise fan every batch out to a
    thread pool over all the machine's cores, which the other loaders and ranks are using; waking
    it costs more than 32 captions take to encode. An explicit TOKENIZERS_PARALLELISM is kept."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Batches(torch.utils.data.IterableDataset):
    """Collated batches for one rank; also runs inside DataLoader processes (num_workers > 0).
    `start_step` continues the data where a run resumed at that step stood: DataLoader worker w of
    n yields steps start+w, start+w+n, ... from the lane (step mod n) that owned them
    (mvlp_core/train/plan.py), its stream fast-forwarded past the lane's earlier batches."""

    def __init__(
        self,
        cfg: LoaderConfig,
        transform: Callable,
        collate: Callable[[list[Example]], dict],
        rank: int = 0,
        world: int = 1,
        start_step: int = 0,
    ):
        self.cfg, self.transform, self.collate = cfg, transform, collate
        self.rank, self.world, self.start_step = rank, world, start_step
        self.skips = Skips()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        serial_tokenizers()
        info = torch.utils.data.get_worker_info()
        procs, proc = (info.num_workers, info.id) if info else (1, 0)
        lane = lane_of(self.start_step, proc, procs)
        part, parts = self.rank * procs + lane, self.world * procs
        earlier = len(range(lane, self.start_step, procs))  # the lane's batches before start_step
        stream = examples(self.cfg, self.transform, part, parts, self.skips, earlier * self.cfg.batch_size)
        while True:
            chunk = [next(stream) for _ in range(self.cfg.batch_size)]
            batch = self.collate(chunk)
            batch["skipped"] = torch.tensor(sum(self.skips.counts.values()))  # this process's so far
            batch["loader_worker"] = torch.tensor(proc)
            yield batch


def loader(dataset: torch.utils.data.IterableDataset, num_workers: int) -> Iterator[dict[str, Any]]:
    if num_workers == 0:
        return iter(dataset)
    dl = torch.utils.data.DataLoader(  # on a GPU, batches are pinned in a thread beside the step
        dataset,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=True,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=forget_parent_thread_exits,
    )
    return iter(dl)


def resumable(
    dataset: torch.utils.data.IterableDataset, num_workers: int
) -> Callable[[int], Iterator[dict[str, Any]]]:
    """What the training loop takes: start step -> the batches from that step on (`loader` over
    the dataset with its `start_step` set), so a resumed run continues the data where it stood."""

    def at(start_step: int) -> Iterator[dict[str, Any]]:
        dataset.start_step = start_step
        return loader(dataset, num_workers)

    return at
