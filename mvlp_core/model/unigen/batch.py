"""One training sample (`Example`), the image preprocessing and `collate`, which turns a list of
examples into padded tensors. The decoder prompt (image queries, encoder states, task token) is
assembled inside the model, so `labels` here cover the target only; the model puts -100 on every
prompt position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mvlp_core.model.parts import fast_tokens, host_index
from mvlp_core.model.parts.images import resize_rgb, stack_images
from mvlp_core.model.tokenizers import TASK_IDS, Tokenizers
from mvlp_core.spec import ModelSpec

CHARS_PER_TOKEN = 16  # cut pathological texts before tokenizing: no token is longer than this
TRANS, CAP, QUS, MATCH = (TASK_IDS[t] for t in ("trans", "cap", "qus", "match"))
USES_IMAGE = (CAP, QUS, MATCH)
USES_TEXT = (TRANS, QUS, MATCH)


@dataclass
class Example:
    task: str  # "cap" | "trans" | "qus" | "match"  ([match] + contrastive are also derived in-batch)
    image: torch.Tensor | None  # uint8 [3,H,W] from image_transform, or [K,3,H,W]; None = text-only
    source: str  # encoder text: trans -> non-English caption; qus -> question; cap -> ""
    source_lang: str
    target: str  # English target: cap/trans -> English caption; qus -> answer; match -> yes/no
    caption: str | None = None  # text paired with the image for contrastive + match; None = none


def image_transform(spec: ModelSpec) -> Callable:
    """PIL image -> uint8 tensor [3, S, S]: RGB, bicubic resize to `image_size`; the image encoder
    normalises it on its device with BLIP-2's mean and std (mvlp_core/model/vision.py)."""
    return resize_rgb(spec.image_size)


def _clip(text: str | None, max_len: int) -> str:
    return (text or "")[: max_len * CHARS_PER_TOKEN]


def _images(examples: list[Example], size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pixel_values [B,3,S,S] (or [B,K,3,S,S] when any example has K images), has_image [B] and
    image_mask [B,K] (K = 1 for single images)."""
    b = len(examples)
    for e in examples:
        if e.image is not None and tuple(e.image.shape[-3:]) != (3, size, size):
            raise ValueError(
                f"image of shape {tuple(e.image.shape)}; expected [3,{size},{size}]"
                " from image_transform(spec)"
            )
    if all(e.image is not None and e.image.dim() == 3 for e in examples):  # the common batch: one stack
        pixels = stack_images([e.image for e in examples])
        return pixels, torch.ones(b, dtype=torch.bool), torch.ones(b, 1, dtype=torch.bool)
    ks = [0 if e.image is None else (e.image.shape[0] if e.image.dim() == 4 else 1) for e in examples]
    multi = any(e.image is not None and e.image.dim() == 4 for e in examples)
    k = max([1, *ks])
    dtype = next((e.image.dtype for e in examples if e.image is not None), torch.uint8)
    pixels = torch.zeros(b, k, 3, size, size, dtype=dtype)
    mask = torch.zeros(b, k, dtype=torch.bool)
    for i, e in enumerate(examples):
        if e.image is None:
            continue
        image = e.image if e.image.dim() == 4 else e.image.unsqueeze(0)
        pixels[i, : image.shape[0]] = image
        mask[i, : image.shape[0]] = True
    has_image = mask.any(dim=1)
    return (pixels if multi else pixels[:, 0]), has_image, mask


def _encode(tokenizer, groups: list[list[str]], max_len: int) -> list[dict[str, torch.Tensor]]:
    """Each group of texts padded to its own longest, as one tokenizer call per group would give,
    in one call for all (each call has a fixed cost several times a short caption's)."""
    texts = [_clip(t, max_len) for group in groups for t in group]
    ids, mask = map(torch.from_numpy, fast_tokens.padded(tokenizer, texts, max_len))
    parts, start = [], 0
    for group in groups:
        rows = slice(start, start + len(group))
        width = int(mask[rows].sum(dim=1).max())
        parts.append({"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width]})
        start += len(group)
    return parts


def collate(examples: list[Example], tokenizers: Tokenizers, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Pad a list of examples into the batch `UniGen.forward` takes (keys: see the contract)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    unknown = {e.task for e in examples} - set(TASK_IDS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; allowed: {', '.join(TASK_IDS)}")
    enc, dec = tokenizers.encoder, tokenizers.decoder
    pixels, has_image, image_mask = _images(examples, spec.image_size)
    source, itc = _encode(
        enc, [[e.source for e in examples], [e.caption for e in examples]], spec.max_text_len
    )
    # target tokens + eos, truncated so eos always fits
    targets = [
        e.ids
        for e in fast_tokens.encodings(
            dec,
            [_clip(e.target, spec.max_target_len) for e in examples],
            spec.max_target_len - 1,
            pad=False,
            add_special_tokens=False,
        )
    ]
    width = max(len(ids) for ids in targets) + 1
    dec_ids = np.full((len(examples), width), dec.pad_token_id, dtype=np.int64)
    dec_mask = np.zeros((len(examples), width), dtype=np.int64)
    for i, ids in enumerate(targets):
        dec_ids[i, : len(ids)] = ids
        dec_ids[i, len(ids)] = dec.eos_token_id
        dec_mask[i, : len(ids) + 1] = 1
    dec_ids_t, dec_mask_t = torch.from_numpy(dec_ids), torch.from_numpy(dec_mask)
    task = torch.tensor([TASK_IDS[e.task] for e in examples], dtype=torch.long)
    has_caption = torch.tensor([bool(e.caption and e.caption.strip()) for e in examples])
    return {
        "task": task,
        "pixel_values": pixels,
        "has_image": has_image,
        "image_mask": image_mask,
        "enc_ids": source["input_ids"],
        "enc_mask": source["attention_mask"],
        "itc_ids": itc["input_ids"],
        "itc_mask": itc["attention_mask"],
        "has_caption": has_caption,
        "dec_ids": dec_ids_t,
        "dec_mask": dec_mask_t,
        "labels": dec_ids_t.masked_fill(dec_mask_t == 0, -100),
        **row_indices(task, has_image, has_caption, single=pixels.dim() == 4),
    }


def row_indices(
    task: torch.Tensor, has_image: torch.Tensor, has_caption: torch.Tensor, single: bool
) -> dict[str, torch.Tensor]:
    """The rows each of the model's encoder calls reads, as index tensors made here on the host:
    the model selects them with `index_select`, whose size the host knows, where a boolean mask
    would make it ask the device how many rows there are (on a GPU, a synchronisation a call).
    `rows_text`: the encoder text of [trans], [qus] and [match]; `rows_itc`: image-caption pairs
    (contrastive and [match] rows; single-image batches only); `rows_image`: the images the
    decoder or the contrastive loss reads; `rows_pairs`: text-only parallel pairs; `rows_of`: their
    guard (mvlp_core/model/parts/host_index.py), so a batch cut row-wise afterwards is read through
    its masks. Code that changes a collated batch's `task`, `has_image` or `has_caption` drops the
    `rows_*` keys."""
    uses_text = torch.isin(task, torch.tensor(USES_TEXT))
    itc = has_image & has_caption & single
    images = (torch.isin(task, torch.tensor(USES_IMAGE)) & has_image) | itc
    pairs = (task == TRANS) & ~has_image & has_caption
    return {
        "rows_of": host_index.guard(task),
        **{
            f"rows_{name}": host_index.flat_index(rows)
            for name, rows in (("text", uses_text), ("itc", itc), ("image", images), ("pairs", pairs))
        },
    }
