"""Turning raw samples into the tensors `ErnieModel.forward` reads, one sub-batch per task.

Every draw (which caption language an image record gives, prefix lengths, masks) is made here with
the caller's generator, so tests can inspect and replay it.

Batch layout (any subset of the tasks; T text tokens with their special tokens, padded):

    cmcl, itm:   pixel_values [B,3,S,S] uint8; ids, mask [B,T]        (a caption in any language)
    clcl:        ids_a, mask_a, ids_b, mask_b [P,T]                    (a translation pair)
    mlm_image:   pixel_values; masked_ids, mask, labels [B,T]          (caption masked, 80/10/10)
    mlm_text:    masked_ids, mask, labels [M,T]                        (monolingual text)
    plm, vplm:   (vplm: pixel_values) enc_ids, enc_mask [N,Te]: the prefix (all padding where it is
                 empty); dec_ids, dec_mask, dec_labels [N,Td]: the suffix after <s>; lang [N]
    mt:          enc_ids, enc_mask: the source; dec_*: the target; lang: the target's language
    mmmt:        pixel_values; enc_ids: the source with [MASK]s, enc_mask, enc_labels (the masked
                 tokens' ids, -100 elsewhere); dec_*: the full translation; lang
    n_samples:   rows over all tasks (int tensor); 0 where no record of an image task had the
                 captions it needs (the model's loss is then a zero: the step learns nothing;
                 CMCL keeps a sub-batch of no rows, so that the rank joins the loss's all-gathers)

`labels`/`enc_labels` come with `labels_at`/`enc_labels_at` and their guards (`*_of`), the labelled
positions as host-made flat indices (mvlp_core/model/parts/host_index.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from mvlp_core.model.parts import host_index
from mvlp_core.model.parts.images import resize_rgb, stack_images
from mvlp_core.model.parts.masking import IGNORE, bert_mask
from mvlp_core.spec.model_ernie import ErnieModelSpec

CHARS_PER_TOKEN = 16  # cut pathological texts before tokenizing: no token is longer than this
IMAGE_TASKS = ("cmcl", "itm", "mlm_image", "vplm", "mmmt")
PAIR_TASKS = ("clcl", "mt")
MONO_TASKS = ("mlm_text", "plm")
BATCH_TASKS = IMAGE_TASKS + PAIR_TASKS + MONO_TASKS


def image_transform(spec: ErnieModelSpec) -> Callable:
    """PIL image -> uint8 tensor [3, S, S] (RGB, bicubic to `spec.image_size`); the model
    normalises it on its device with the ViT checkpoint's mean/std."""
    return resize_rgb(spec.image_size)


def _pick(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def captions_of(record: dict[str, Any]) -> dict[str, str]:
    """The record's non-empty captions by language, in language order."""
    caps = record.get("captions") or {}
    return {lang: t.strip() for lang, t in sorted(caps.items()) if isinstance(t, str) and t.strip()}


class Encoder:
    """Token ids without special tokens, and the sequences built from them (<s> … </s>)."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.bos, self.eos, self.pad_id = (
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        )
        self.mask_id = tokenizer.mask_token_id
        self.vocab = len(tokenizer)

    def pieces(self, texts: list[str], max_len: int) -> list[list[int]]:
        """Each text's token ids, cut to leave room for <s> and </s> within `max_len`."""
        cut = [(t or "")[: max_len * CHARS_PER_TOKEN] for t in texts]
        ids = self.tok(cut, add_special_tokens=False)["input_ids"]
        return [row[: max_len - 2] for row in ids]

    def pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) [N, longest]; a row may be empty (all padding)."""
        width = max(1, max(len(r) for r in rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask

    def sentences(self, pieces: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pad([[self.bos, *p, self.eos] for p in pieces])

    def decoder(self, pieces: list[list[int]]) -> dict[str, torch.Tensor]:
        """Teacher forcing: input <s> t1 … tn, labels t1 … tn </s> (-100 on padding)."""
        ids, mask = self.pad([[self.bos, *p] for p in pieces])
        targets, _ = self.pad([[*p, self.eos] for p in pieces])
        labels = targets.masked_fill(mask == 0, IGNORE)
        return {"dec_ids": ids, "dec_mask": mask, "dec_labels": labels}


def prefix_lengths(lengths: list[int], spec: ErnieModelSpec, generator: torch.Generator) -> list[int]:
    """T_p per text of T tokens: 0 with probability `prefix_zero_prob`, else ⌊prefix_ratio · T⌋ (§3.2.3)."""
    zero = torch.rand(len(lengths), generator=generator) < spec.prefix_zero_prob
    return [0 if z else math.floor(spec.prefix_ratio * n) for z, n in zip(zero.tolist(), lengths)]


def mask_all(
    ids: torch.Tensor, never: torch.Tensor, mask_id: int, p: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels): each maskable token replaced by [MASK] with probability `p` (mMMT's
    "randomly replacing textual tokens ... with masked tokens"), at least one a row, labelled with
    its id."""
    maskable = ~never
    chosen = (torch.rand(ids.shape, generator=generator) < p) & maskable
    # a row with maskable tokens but none chosen gets one, drawn uniformly (as bert_mask does)
    scores = torch.rand(ids.shape, generator=generator).masked_fill(~maskable, -1.0)
    lacking = maskable.any(dim=1) & ~chosen.any(dim=1)
    chosen[lacking, scores[lacking].argmax(dim=1)] = True
    return ids.masked_fill(chosen, mask_id), ids.masked_fill(~chosen, IGNORE)


class Collate:
    """`items` {task: [...]} -> the batch (module docstring). Image tasks take (image [3,S,S],
    record) with the record's `captions`; pair tasks (text_a, lang_a, text_b, lang_b); monolingual
    tasks (text, lang). `lang_ids` maps languages to the decoder's language rows (0: any not
    in `spec.languages`)."""

    def __init__(self, tokenizer, spec: ErnieModelSpec) -> None:
        self.enc = Encoder(tokenizer)
        self.spec = spec
        self.langs = {lang: i + 1 for i, lang in enumerate(spec.languages)}  # 0: any other

    def lang_ids(self, langs: list[str]) -> torch.Tensor:
        return torch.tensor([self.langs.get(lang, 0) for lang in langs], dtype=torch.long)

    def _images(self, images: list[torch.Tensor]) -> torch.Tensor:
        size = self.spec.image_size
        for image in images:
            if tuple(image.shape) != (3, size, size):
                raise ValueError(f"image of shape {tuple(image.shape)}; expected [3,{size},{size}]")
        return stack_images(images)

    def _bert(self, pieces: list[list[int]], generator: torch.Generator) -> dict[str, torch.Tensor]:
        ids, mask = self.enc.sentences(pieces)
        never = (mask == 0) | (ids == self.enc.bos) | (ids == self.enc.eos)
        masked, labels = bert_mask(
            ids, never, self.enc.vocab, self.enc.mask_id, generator, self.spec.mask_prob
        )
        return {
            "masked_ids": masked,
            "mask": mask,
            "labels": labels,
            **host_index.label_index(labels, "labels_at", "labels_of", IGNORE),
        }

    def _prefix_lm(self, pieces: list[list[int]], langs: list[str], g: torch.Generator) -> dict:
        cut = prefix_lengths([len(p) for p in pieces], self.spec, g)
        prefix = [[self.enc.bos, *p[:c], self.enc.eos] if c else [] for p, c in zip(pieces, cut)]
        enc_ids, enc_mask = self.enc.pad(prefix)
        return {
            "enc_ids": enc_ids,
            "enc_mask": enc_mask,
            **self.enc.decoder([p[c:] for p, c in zip(pieces, cut)]),
            "lang": self.lang_ids(langs),
        }

    def image_task(self, task: str, rows: list[tuple[torch.Tensor, dict]], g: torch.Generator) -> dict | None:
        """One image task's sub-batch; records without the captions it needs are left out."""
        images, first, second = [], [], []
        for image, record in rows:
            caps = captions_of(record)
            langs = list(caps)
            if task == "mmmt":
                if len(langs) < 2:
                    continue
                src = langs[_pick(len(langs), g)]
                rest = [lang for lang in langs if lang != src]
                tgt = rest[_pick(len(rest), g)]
                first.append((caps[src], src))
                second.append((caps[tgt], tgt))
            elif langs:
                lang = langs[_pick(len(langs), g)]
                first.append((caps[lang], lang))
            else:
                continue
            images.append(image)
        if not images:
            if task == "cmcl":  # every rank joins CMCL's all-gathers, with no rows if need be
                size = self.spec.image_size
                empty = torch.zeros((0, 1), dtype=torch.long)
                return {
                    "pixel_values": torch.zeros((0, 3, size, size), dtype=torch.uint8),
                    "ids": empty,
                    "mask": empty,
                }
            return None
        L = self.spec.max_len.image_text
        pieces = self.enc.pieces([t for t, _ in first], L)
        out: dict[str, Any] = {"pixel_values": self._images(images)}
        if task in ("cmcl", "itm"):
            out["ids"], out["mask"] = self.enc.sentences(pieces)
        elif task == "mlm_image":
            out.update(self._bert(pieces, g))
        elif task == "vplm":
            out.update(self._prefix_lm(pieces, [lang for _, lang in first], g))
        else:  # mmmt: the source masked (and predicted), the whole translation generated
            ids, mask = self.enc.sentences(pieces)
            never = (mask == 0) | (ids == self.enc.bos) | (ids == self.enc.eos)
            masked, labels = mask_all(ids, never, self.enc.mask_id, self.spec.mmmt_mask_prob, g)
            target = self.enc.pieces([t for t, _ in second], L)
            out.update(
                enc_ids=masked,
                enc_mask=mask,
                enc_labels=labels,
                **host_index.label_index(labels, "enc_labels_at", "enc_labels_of", IGNORE),
                **self.enc.decoder(target),
                lang=self.lang_ids([lang for _, lang in second]),
            )
        return out

    def pair_task(self, task: str, rows: list[tuple[str, str, str, str]], g: torch.Generator) -> dict:
        L = self.spec.max_len.parallel
        if task == "clcl":
            a = self.enc.pieces([r[0] for r in rows], L)
            b = self.enc.pieces([r[2] for r in rows], L)
            ids_a, mask_a = self.enc.sentences(a)
            ids_b, mask_b = self.enc.sentences(b)
            return {"ids_a": ids_a, "mask_a": mask_a, "ids_b": ids_b, "mask_b": mask_b}
        # mt: each pair translated one way, the direction drawn per pair
        flip = (torch.rand(len(rows), generator=g) < 0.5).tolist()
        src = [(r[2], r[3]) if f else (r[0], r[1]) for r, f in zip(rows, flip)]
        tgt = [(r[0], r[1]) if f else (r[2], r[3]) for r, f in zip(rows, flip)]
        enc_ids, enc_mask = self.enc.sentences(self.enc.pieces([t for t, _ in src], L))
        return {
            "enc_ids": enc_ids,
            "enc_mask": enc_mask,
            **self.enc.decoder(self.enc.pieces([t for t, _ in tgt], L)),
            "lang": self.lang_ids([lang for _, lang in tgt]),
        }

    def mono_task(self, task: str, rows: list[tuple[str, str]], g: torch.Generator) -> dict:
        pieces = self.enc.pieces([r[0] for r in rows], self.spec.max_len.mono)
        if task == "mlm_text":
            return self._bert(pieces, g)
        return self._prefix_lm(pieces, [r[1] for r in rows], g)

    def __call__(self, items: dict[str, list], generator: torch.Generator) -> dict[str, Any]:
        unknown = set(items) - set(BATCH_TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)}; allowed: {', '.join(BATCH_TASKS)}")
        out: dict[str, Any] = {}
        n = 0
        for task, rows in items.items():
            if not rows:
                continue
            if task in IMAGE_TASKS:
                sub = self.image_task(task, rows, generator)
            elif task in PAIR_TASKS:
                sub = self.pair_task(task, rows, generator)
            else:
                sub = self.mono_task(task, rows, generator)
            if sub is not None:
                out[task] = sub
                n += next(iter(sub.values())).shape[0]
        out["n_samples"] = torch.tensor(n, dtype=torch.long)
        return out
