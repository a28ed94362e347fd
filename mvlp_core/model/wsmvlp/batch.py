"""Turning raw samples into the tensors `WsmvlpModel.forward` reads: the image transform and
`collate`, which tokenizes each stream, truncates it to its `max_len` and masks it with
`bert_mask` (in the collate, with the caller's generator, so tests can inspect and replay it).

Batch layout (any subset of the three streams; lengths are each stream's longest row):

    image:    pixel_values [B,3,S,S] (uint8); ids, mask, masked_ids, labels [B,L]   (English captions)
    parallel: ids_a, mask_a, masked_ids_a, labels_a and the same with _b [P,L] (one common length)
    mono:     ids, mask, masked_ids, labels [M,L]
    n_samples: B + P + M (int tensor)

`ids` are the clean token ids, `masked_ids` the corrupted ones, `labels` the original id at the
selected positions and -100 elsewhere; each `labels` comes with `labels_at` and `labels_of` (same
suffix), its masked positions as host-made flat indices (`label_index`). Language codes are
accepted but not used: XLM-R has no language embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mvlp_core.model.parts import fast_tokens, host_index
from mvlp_core.model.parts.augment import AugmentedSquare
from mvlp_core.model.parts.images import resize_rgb, stack_images
from mvlp_core.model.parts.masking import IGNORE, bert_mask
from mvlp_core.spec.model_wsmvlp import WsmvlpModelSpec

CHARS_PER_TOKEN = 16  # cut pathological texts before tokenizing: no token is longer than this
STREAMS = ("image", "parallel", "mono")


def image_transform(spec: WsmvlpModelSpec) -> Callable:
    """PIL image -> uint8 tensor [3, S, S]: RGB, bicubic resize to `spec.image_size`; the model
    normalises it on its device with the ViT checkpoint's mean/std (`WsmvlpModel.pixel_norm`; the
    ImageNet-21k ViT-B/16 and the random sizes use 0.5/0.5)."""
    return resize_rgb(spec.image_size)


def train_image_transform(spec: WsmvlpModelSpec) -> Callable:
    """The pretraining loader's transform: `image_transform` after the spec's augmentation
    (`model.augment`; mvlp_core/model/parts/augment.py), which takes a seeded `random.Random`."""
    a = spec.augment
    if a is None:
        return image_transform(spec)
    return AugmentedSquare(
        spec.image_size,
        crop_scale=a.crop_scale,
        hflip=a.hflip,
        ops=a.ops,
        n_ops=a.n_ops,
        magnitude=a.magnitude,
        prob=a.prob,
    )


def _tokenize(
    texts: list[str], tokenizer, max_len: int, spec: WsmvlpModelSpec, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    found = fast_tokens.encodings(
        tokenizer, [(t or "")[: max_len * CHARS_PER_TOKEN] for t in texts], max_len, pad=True
    )
    ids = torch.tensor([e.ids for e in found], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in found], dtype=torch.long)
    special = torch.tensor([e.special_tokens_mask for e in found], dtype=torch.bool)
    never = special | (mask == 0)
    masked, labels = bert_mask(ids, never, len(tokenizer), tokenizer.mask_token_id, generator, spec.mask_prob)
    return {"ids": ids, "mask": mask, "masked_ids": masked, "labels": labels}


def label_index(labels: torch.Tensor, suffix: str = "") -> dict[str, torch.Tensor]:
    """The masked positions of `labels` [N, L] as flat indices made here on the host (`labels_at`),
    and their guard (`labels_of`; mvlp_core/model/parts/host_index.py)."""
    return host_index.label_index(labels, f"labels_at{suffix}", f"labels_of{suffix}", IGNORE)


def _images(images: list[torch.Tensor], size: int) -> torch.Tensor:
    for image in images:
        if tuple(image.shape) != (3, size, size):
            raise ValueError(
                f"image of shape {tuple(image.shape)}; expected [3,{size},{size}] from image_transform(spec)"
            )
    return stack_images(images)


def collate(
    items: dict[str, list], tokenizer, spec: WsmvlpModelSpec, generator: torch.Generator | None
) -> dict:
    """`items`: {"image": [(image [3,S,S], caption_en)], "parallel": [(text_a, lang_a, text_b,
    lang_b)], "mono": [(text, lang)]}, any subset, empty lists dropped -> the batch (module
    docstring)."""
    unknown = set(items) - set(STREAMS)
    if unknown:
        raise ValueError(f"unknown stream(s) {sorted(unknown)}; allowed: {', '.join(STREAMS)}")
    out: dict = {}
    if items.get("image"):
        images, captions = zip(*items["image"])
        out["image"] = {
            "pixel_values": _images(list(images), spec.image_size),
            **_tokenize(list(captions), tokenizer, spec.max_len.image_text, spec, generator),
        }
    if items.get("parallel"):
        side_a = [row[0] for row in items["parallel"]]
        side_b = [row[2] for row in items["parallel"]]
        both = _tokenize(side_a + side_b, tokenizer, spec.max_len.parallel, spec, generator)
        n = len(side_a)
        out["parallel"] = {
            f"{k}_{side}": v[i * n : (i + 1) * n] for k, v in both.items() for i, side in enumerate("ab")
        }
    if items.get("mono"):
        out["mono"] = _tokenize(
            [row[0] for row in items["mono"]], tokenizer, spec.max_len.mono, spec, generator
        )
    if not out:
        raise ValueError("collate needs at least one sample in one stream")
    for name, suffixes in (("image", [""]), ("parallel", ["_a", "_b"]), ("mono", [""])):
        for suffix in suffixes if name in out else ():
            out[name].update(label_index(out[name][f"labels{suffix}"], suffix))
    n = sum(len(items.get(s) or ()) for s in STREAMS)
    out["n_samples"] = torch.tensor(n, dtype=torch.long)
    return out
