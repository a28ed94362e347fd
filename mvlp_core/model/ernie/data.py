"""ERNIE-UniX²'s data recipe (§3.2, Table 6): every micro-step one task, drawn with equal
probability from the spec's tasks, the same on every rank (a plan of (seed, step):
mvlp_core/train/plan.py); gradients of the micro-steps of an optimizer step add up ("we merge all
the gradients for all tasks").

Where each task reads (mvlp_core/train/streams.py):
- CMCL, ITM, vPLM, MLM on image–text, mMMT: the image shards, a caption in any language of the
  record (CC3M's translated captions, as the paper's), mMMT two of them (a record with one
  caption is left out of an mMMT batch; a batch left with none is a step that learns nothing);
- CLCL, MT: translation pairs of the text shards in any direction, pairs drawn ∝ the manifest's
  weights (OPUS's mix);
- PLM, MLM on text: monolingual sentences sampled by language (CC-100's).
MLM is one task of the eight: half its draws read image–text pairs, half monolingual text.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mvlp_core.contract import StageError
from mvlp_core.model.ernie.batch import Collate, image_transform
from mvlp_core.train.plan import Schedule
from mvlp_core.train.streams import MultiStreamBatches, Sources, content_generator, text_stream_index

if TYPE_CHECKING:
    from mvlp_core.model.ernie.model import ErnieModel
    from mvlp_core.train.job import TrainJob

STREAM = {
    "cmcl": "image",
    "itm": "image",
    "mlm_image": "image",
    "vplm": "image",
    "mmmt": "image",
    "clcl": "parallel",
    "mt": "parallel",
    "mlm_text": "mono",
    "plm": "mono",
}


def schedule(tasks: list[str], per_micro_step: int) -> Schedule:
    """One task a micro-step, each of `tasks` with equal probability (MLM's share split between its
    two sources)."""
    ratios: dict[str, float] = {}
    for task in tasks:
        if task == "mlm":
            ratios.update(mlm_image=0.5, mlm_text=0.5)
        else:
            ratios[task] = 1.0
    return Schedule(
        "ratio",
        dict.fromkeys(ratios, per_micro_step),
        ratios=ratios,
        streams={t: STREAM[t] for t in ratios},
        accum=1,
    )


def train_batches(job: TrainJob, model: ErnieModel, rank: int, world: int) -> MultiStreamBatches:
    spec, p = job.spec.model, job.spec.pretrain
    plan = schedule(list(spec.tasks), math.ceil(spec.batch / (world * p.grad_accum)))
    used = plan.used_streams()
    text = None
    if used & {"parallel", "mono"}:
        if job.text_dir is None:
            raise StageError(
                "pretrain: ERNIE-UniX²'s CLCL, MT, PLM and MLM read translation pairs and monolingual"
                " text; add text corpora (text.corpora) so the text-shard stage runs, or leave those"
                " tasks out of model.tasks"
            )
        text = text_stream_index(job.text_dir)
    sources = Sources(image_urls=job.image_urls, text=text, shuffle_buffer=p.loader.shuffle_buffer)
    collate = Collate(model.tokenizer, spec)

    def collate_fn(items: dict[str, list]) -> dict[str, Any]:
        rows = {
            task: [(image, record) for _, record, image in got] if STREAM[task] == "image" else got
            for task, got in items.items()
        }
        return collate(rows, content_generator(p.seed, rank, items))

    return MultiStreamBatches(
        sources,
        plan,
        collate_fn,
        seed=p.seed,
        rank=rank,
        world=world,
        image_transform=image_transform(spec),
    )
