"""An evaluation item reduced to what a head feeds the model: id, image file(s), source text, gold;
and the bounded image cache every head decodes through.

Images are resolved through the task's image root; an item whose image is missing or cannot be
decoded becomes a ``contract.Reject`` carrying the item id, and the run goes on.

Memory is bounded by a batch, not by a data set: heads decode images as their batch is built,
through an ``ImageCache`` that holds at most ``max_bytes`` of image tensors (spec
``iglue.image_cache_mb``), least recently used out first. A training set (``Streamed``) keeps image
references and builds each batch's examples when the batch is drawn, so fine-tuning over NLVR2's
or GQA's training sets never holds more than the cache and one batch of images. With
``iglue.finetune.augment`` a training set draws through ``AugmentedImages`` instead: every draw a
fresh crop, flip and RandAugment of the decoded image, nothing cached.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol, TypeVar

import torch

from mvlp_core.contract import Reject
from mvlp_core.eval.images import ImageRef, open_rgb

T = TypeVar("T")


@dataclass(frozen=True)
class Prepared:
    id: str
    images: tuple[ImageRef, ...]
    source: str
    lang: str
    gold: Any  # label word, True/False, answer string; None = no gold (XVNLI "-")


def keep_resolved(
    candidates: list[tuple[str, list[ImageRef | None], str, str, Any]], refs: list[list[str]]
) -> tuple[list[Prepared], list[Reject]]:
    """(id, resolved paths, source, lang, gold) -> Prepared, or a missing_image reject naming the
    unresolved reference."""
    kept, rejects = [], []
    for (item_id, paths, source, lang, gold), ref in zip(candidates, refs):
        missing = [r for r, p in zip(ref, paths) if p is None]
        if missing:
            rejects.append(Reject(item_id, "missing_image", ", ".join(missing)))
        else:
            kept.append(Prepared(item_id, tuple(paths), source, lang, gold))
    return kept, rejects


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class ImageCache:
    """Transformed image tensors by reference, at most ``max_bytes`` of them, least recently used
    out first: an image shared by many items is decoded once while it stays cached. Undecodable
    images are not cached (None each time)."""

    def __init__(self, transform: Callable[[Any], torch.Tensor], max_bytes: int) -> None:
        self.transform, self.max_bytes = transform, max_bytes
        self._cache: OrderedDict[ImageRef, torch.Tensor] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, ref: ImageRef) -> torch.Tensor | None:
        if ref in self._cache:
            self._cache.move_to_end(ref)
            return self._cache[ref]
        image = open_rgb(ref)
        if image is None:
            return None
        tensor = self.transform(image)
        self._keep(ref, tensor)
        return tensor

    def _keep(self, ref: ImageRef, tensor: torch.Tensor) -> None:
        """Cache ``tensor``, evicting the least recently used until it fits (never past the bound:
        a tensor larger than the whole cache is returned but not kept)."""
        size = _nbytes(tensor)
        if size > self.max_bytes:
            return
        while self.nbytes + size > self.max_bytes:
            _, evicted = self._cache.popitem(last=False)
            self.nbytes -= _nbytes(evicted)
        self._cache[ref] = tensor
        self.nbytes += size

    def stack(self, refs: tuple[ImageRef, ...]) -> torch.Tensor | None:
        tensors = [self.get(r) for r in refs]
        if any(t is None for t in tensors):
            return None
        return tensors[0] if len(tensors) == 1 else torch.stack(tensors)


class ImageSource(Protocol):
    """Where a training set's images come from: ``stack`` gives an item's image tensor (one, or
    [n, ...] for n images), None when one does not decode."""

    def stack(self, refs: tuple[ImageRef, ...]) -> torch.Tensor | None: ...


class AugmentedImages:
    """Training images decoded and augmented at every draw (``iglue.finetune.augment``), never
    cached: each epoch sees another crop, flip and RandAugment of an image, as the weakly-supervised
    paper fine-tunes (App. B.2.2). The draws come from one generator seeded with the run's seed, so
    a fine-tune repeats its images exactly; memory is the batch's images."""

    def __init__(self, augment: Callable[[Any, random.Random], torch.Tensor], seed: int) -> None:
        self.augment, self.rng = augment, random.Random(seed)

    def stack(self, refs: tuple[ImageRef, ...]) -> torch.Tensor | None:
        tensors = []
        for ref in refs:
            image = open_rgb(ref)
            if image is None:
                return None
            tensors.append(self.augment(image, self.rng))
        return tensors[0] if len(tensors) == 1 else torch.stack(tensors)


def decoded(
    items: Iterable[Prepared], cache: ImageCache, rejects: list[Reject]
) -> Iterator[tuple[Prepared, torch.Tensor]]:
    """Each item with its image tensor, decoded when the caller reaches it; an undecodable image
    appends a ``bad_image`` reject to ``rejects`` and skips its item."""
    for item in items:
        image = cache.stack(item.images)
        if image is None:
            rejects.append(Reject(item.id, "bad_image", ", ".join(map(str, item.images))))
        else:
            yield item, image


def chunks(values: Iterable[T], size: int) -> Iterator[list[T]]:
    """``values`` in consecutive lists of ``size`` (the last may be shorter), drawn lazily."""
    it = iter(values)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass(frozen=True)
class Pending:
    """A training example before its image is decoded: the image reference(s) and the rest of
    the model's ``Example`` fields (task, source, source_lang, target, caption)."""

    images: tuple[ImageRef, ...]
    fields: dict[str, Any]
    key: str = ""  # the item's id, for its reject should an image not decode


class Streamed:
    """A training set whose images are decoded batch by batch through a bounded cache: nothing is
    decoded when it is built. An example whose image cannot be decoded is left out of its batch and
    recorded once in ``bad`` (index -> ``bad_image`` reject), so a fine-tune can report it."""

    def __init__(self, example: Callable[..., Any], pending: list[Pending], cache: ImageSource) -> None:
        self.example, self.pending, self.cache = example, pending, cache
        self.bad: dict[int, Reject] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def batch(self, indices: Sequence[int]) -> list[Any]:
        """The model examples at ``indices``, their images decoded now."""
        out = []
        for i in indices:
            pending = self.pending[i]
            image = self.cache.stack(pending.images)
            if image is None:
                self.bad.setdefault(i, Reject(pending.key, "bad_image", ", ".join(map(str, pending.images))))
            else:
                out.append(self.example(image=image, **pending.fields))
        return out

    @property
    def rejects(self) -> list[Reject]:
        """The examples found undecodable so far, in index order."""
        return [self.bad[i] for i in sorted(self.bad)]


class DecodedImages(Sequence[torch.Tensor]):
    """Image tensors of ``refs`` decoded on access (an index or a slice) through the cache: a
    retrieval set's images for scoring, without holding them all."""

    def __init__(self, refs: list[ImageRef], cache: ImageCache) -> None:
        self.refs, self.cache = refs, cache

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int | slice) -> Any:  # a tensor, or a list of them for a slice
        if isinstance(index, slice):
            return [self.cache.get(r) for r in self.refs[index]]
        return self.cache.get(self.refs[index])
