"""UniGen (BLIP-2 ViT + Q-Former, XLM-R, GPT-2; seed 002) as a model family: the hooks of the
contract in mvlp_core/model/families.py. The model is in `model.py`, its batch in `batch.py`, its
data recipe (image records -> [cap]/[qus]/[trans] examples, English parallel pairs) in
mvlp_core/train/data.py."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvlp_core.contract import StageError
from mvlp_core.model.families import EvalBindings
from mvlp_core.model.tokenizers import TASK_IDS, TASK_TOKENS, Tokenizers, build_tokenizers, load_tokenizers
from mvlp_core.model.unigen.batch import Example, collate, image_transform
from mvlp_core.model.unigen.model import UniGen, base_shaped_configs, build_model
from mvlp_core.spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from mvlp_core.train.job import TrainJob

NAME = "unigen"
# IGLUE task -> head kind (mvlp_core/eval/tasks.py): UniGen reads every task through its decoder
IGLUE = {
    "xvnli": "generative",
    "xgqa": "generative",
    "marvl": "generative",
    "xflickrco": "generative",
    "wit": "generative",
}

__all__ = [
    "IGLUE",
    "NAME",
    "TASK_IDS",
    "TASK_TOKENS",
    "Example",
    "Tokenizers",
    "UniGen",
    "base_shaped_configs",
    "build",
    "build_model",
    "build_tokenizers",
    "collate",
    "eval_bindings",
    "image_transform",
    "load",
    "load_tokenizers",
    "train_batches",
]


def build(spec: ModelSpec, texts: Iterable[str] | None, out_dir: Path) -> UniGen:
    """Tokenizers under `out_dir/` (trained on `texts` for the random sizes) and the model."""
    if spec.checkpoint:
        return load(spec.checkpoint)
    return build_model(spec, build_tokenizers(spec, texts, out_dir))


def load(folder: str | Path) -> UniGen:
    return UniGen.from_pretrained(folder)


def train_batches(job: TrainJob, model: UniGen, rank: int, world: int) -> torch.utils.data.IterableDataset:
    """Image records as one task each, interleaved with English parallel pairs (train/data.py)."""
    from mvlp_core.train import data

    spec = job.spec
    cfg = data.LoaderConfig(
        image_urls=job.image_urls,
        text_urls=job.text_urls,
        mix=spec.pretrain.mix,
        languages=spec.languages,
        batch_size=spec.pretrain.batch_size,
        shuffle_buffer=spec.pretrain.loader.shuffle_buffer,
        seed=spec.pretrain.seed,
    )
    tokenizers, model_spec = model.tokenizers, spec.model

    def collate_fn(examples: list[Any]) -> dict[str, Any]:
        return collate(examples, tokenizers, model_spec)

    return data.Batches(cfg, image_transform(model_spec), collate_fn, rank, world)


def eval_bindings(
    model: UniGen, image_size: int | None = None, max_text_len: int | None = None
) -> EvalBindings:
    """The model's image transform and its encoder's text encoding, texts cut at `max_text_len`
    tokens where given (`iglue.max_text_len`), else at its pretraining `max_text_len`."""
    tok, spec = model.tokenizers, model.spec
    if max_text_len is not None:
        spec = spec.model_copy(update={"max_text_len": max_text_len})
    if image_size not in (None, spec.image_size):
        raise StageError(
            f"iglue.image_size {image_size}: UniGen's image encoder reads {spec.image_size} px images "
            "only (BLIP-2's ViT and Q-Former); leave iglue.image_size unset for this model"
        )

    def encode(texts: list[str]) -> tuple[Any, Any]:
        out = tok.encoder(
            texts, padding=True, truncation=True, max_length=spec.max_text_len, return_tensors="pt"
        )
        return out["input_ids"], out["attention_mask"]

    return EvalBindings(image_transform(spec), encode, lambda exs: collate(exs, tok, spec), Example)
