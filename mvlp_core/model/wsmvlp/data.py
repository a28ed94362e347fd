"""The weakly-supervised mVLP's data recipe: every step one batch of each stream (paper §4.1) —
English image–caption pairs from the shards, English–l translation pairs in their corpus's own
language mix (App. B.1.1: all of WikiMatrix) and monolingual sentences sampled by language with
q ∝ p^α, both from the text shards (mvlp_core/train/streams.py).

Weak supervision is the point: no translated caption reaches this family. An image record gives
its English caption only (`captions.en`; the translate stage's captions are never read), and a
record without one is left out of the batch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mvlp_core.contract import StageError
from mvlp_core.model.wsmvlp.batch import collate, train_image_transform
from mvlp_core.train.plan import Schedule
from mvlp_core.train.streams import MultiStreamBatches, Sources, content_generator, text_stream_index

if TYPE_CHECKING:
    from mvlp_core.model.wsmvlp.model import WsmvlpModel
    from mvlp_core.train.job import TrainJob


def per_rank(total: int, ranks: int) -> int:
    """A stream's items per rank and micro-step: the spec gives them per optimizer step, globally."""
    return math.ceil(total / ranks) if total else 0


def english_pairs(items: list[tuple[str, dict[str, Any], Any]]) -> list[tuple[Any, str]]:
    """(image, English caption) of the image records that have one."""
    out = []
    for _, record, image in items:
        caption = ((record.get("captions") or {}).get("en") or "").strip()
        if caption:
            out.append((image, caption))
    return out


def train_batches(job: TrainJob, model: WsmvlpModel, rank: int, world: int) -> MultiStreamBatches:
    spec, p = job.spec.model, job.spec.pretrain
    ranks = world * p.grad_accum
    sizes = {s: per_rank(getattr(spec.batch, s), ranks) for s in ("image", "parallel", "mono")}
    text = None
    if sizes["parallel"] or sizes["mono"]:
        if job.text_dir is None:
            raise StageError(
                "pretrain: the weakly-supervised mVLP reads translation pairs and monolingual text; "
                "add text corpora (text.corpora) so the text-shard stage runs, or set "
                "model.batch.parallel and model.batch.mono to 0"
            )
        text = text_stream_index(job.text_dir)
    # D_t is WikiMatrix's English–l pairs, all of them (paper App. B.1.1): pairs drawn ∝ their lines,
    # not by the text-shard manifest's alpha-sampled weights (alpha is CC-100's, D_m's)
    sources = Sources(
        image_urls=job.image_urls,
        text=text,
        shuffle_buffer=p.loader.shuffle_buffer,
        english_only=True,
        pair_weights="natural",
    )
    tokenizer = model.tokenizer

    def collate_fn(items: dict[str, list]) -> dict[str, Any]:
        streams = {**items, **({"image": english_pairs(items["image"])} if "image" in items else {})}
        return collate(streams, tokenizer, spec, content_generator(p.seed, rank, items))

    return MultiStreamBatches(
        sources,
        Schedule.all_streams(**sizes),
        collate_fn,
        seed=p.seed,
        rank=rank,
        world=world,
        image_transform=train_image_transform(spec),
    )
