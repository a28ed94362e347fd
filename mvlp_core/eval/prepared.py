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
fresh crop, flip and RandAugment of the decoded image, nothing cached. With ``iglue.loader_workers``
a fine-tune's batches are drawn a few micro-batches ahead in DataLoader processes
(``Streamed.batches``), each with its own cache; what they draw is what the unit's thread would.
"""

from __future__ import annotations

import gc
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol, TypeVar

import torch

from mvlp_core.contract import Reject
from mvlp_core.eval.images import ImageRef, open_rgb
from mvlp_core.forked import forget_parent_thread_exits

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

    def stack(self, refs: tuple[ImageRef, ...], key: str | None = None) -> torch.Tensor | None:
        """The images of ``refs`` stacked (one: as is), None when one does not decode; ``key``
        names the draw for an augmenting source and changes nothing here."""
        tensors = [self.get(r) for r in refs]
        if any(t is None for t in tensors):
            return None
        return tensors[0] if len(tensors) == 1 else torch.stack(tensors)


class ImageSource(Protocol):
    """Where a training set's images come from: ``stack`` gives an item's image tensor (one, or
    [n, ...] for n images), None when one does not decode; ``key`` names the draw (epoch and
    index), which an augmenting source seeds its draws from."""

    def stack(self, refs: tuple[ImageRef, ...], key: str | None = None) -> torch.Tensor | None: ...


class AugmentedImages:
    """Training images decoded and augmented at every draw (``iglue.finetune.augment``), never
    cached: each epoch sees another crop, flip and RandAugment of an image, as the weakly-supervised
    paper fine-tunes (App. B.2.2). A draw is seeded by the run's seed and its key (epoch and
    index) alone, so it is the same whichever loader process makes it and a fine-tune repeats its
    images exactly. Memory is the batch's images."""

    def __init__(self, augment: Callable[[Any, random.Random], torch.Tensor], seed: int) -> None:
        self.augment, self.seed = augment, seed

    def stack(self, refs: tuple[ImageRef, ...], key: str | None = None) -> torch.Tensor | None:
        if key is None:
            raise ValueError("an augmented draw needs its key (epoch/index): Streamed.batches gives one")
        rng = random.Random(f"{self.seed}/{key}")
        tensors = []
        for ref in refs:
            image = open_rgb(ref)
            if image is None:
                return None
            tensors.append(self.augment(image, rng))
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
    recorded once in ``bad`` (index -> ``bad_image`` reject), so a fine-tune can report it.

    ``batches`` with loader processes keeps them (and their image caches) from one call to the
    next: every epoch of a fine-tune and every fine-tune of a few-shot grid; ``close`` stops them."""

    def __init__(self, example: Callable[..., Any], pending: list[Pending], cache: ImageSource) -> None:
        self.example, self.pending, self.cache = example, pending, cache
        self.bad: dict[int, Reject] = {}
        self._loader: torch.utils.data.DataLoader | None = None
        self._parts = _Parts()

    def __len__(self) -> int:
        return len(self.pending)

    def batch(self, indices: Sequence[int], key: str | None = None) -> list[Any]:
        """The model examples at ``indices``, their images decoded now (draws keyed
        ``<key>/<index>`` where ``key`` is given)."""
        out, bad = self.draw(indices, key)
        for i, reject in bad.items():
            self.bad.setdefault(i, reject)
        return out

    def draw(
        self, indices: Sequence[int], key: str | None = None, private: bool = False
    ) -> tuple[list[Any], dict[int, Reject]]:
        """``batch`` without recording: the examples, and the undecodable ones by index. A loader
        process asks for ``private`` images: copies of what its cache keeps, since sending a tensor
        to the training process moves it into shared memory (a file descriptor each while cached)."""
        out, bad = [], {}
        cached = private and isinstance(self.cache, ImageCache)
        for i in indices:
            pending = self.pending[i]
            copy = cached and len(pending.images) == 1  # a stack of several is already a new tensor
            image = self.cache.stack(pending.images, None if key is None else f"{key}/{i}")
            if image is None:
                bad[i] = Reject(pending.key, "bad_image", ", ".join(map(str, pending.images)))
            else:
                out.append(self.example(image=image.clone() if copy else image, **pending.fields))
        return out, bad

    def batches(self, parts: Sequence[Sequence[int]], key: str, workers: int = 0) -> Iterator[list[Any]]:
        """``batch`` of each index list in ``parts``, in order, draws keyed by ``key`` (an epoch):
        with ``workers`` > 0 decoded ahead in that many DataLoader processes, two lists each in
        flight, so a GPU step does not wait on JPEG decoding; the undecodable are recorded here as
        ``batch`` records them. Stopping early is fine: the next call starts from its own parts."""
        if not workers:
            for part in parts:
                yield self.batch(part, key)
            return
        self._parts.parts, self._parts.key = parts, key
        loader = self._loader_of(workers)
        # the processes fork on the first call: frozen, the parent's objects are left out of their
        # GC, whose writes would copy the pages they share (unless someone else froze them already)
        freeze = loader._iterator is None and gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            drawing = iter(loader)
        finally:
            if freeze:
                gc.unfreeze()
        for out, bad in drawing:
            for i, reject in bad.items():
                self.bad.setdefault(i, reject)
            yield out

    def _loader_of(self, workers: int) -> torch.utils.data.DataLoader:
        """The persistent loader with ``workers`` processes (forked: they share the set's index
        lists and read image files, nothing of CUDA), started on first use."""
        if self._loader is None or self._loader.num_workers != workers:
            self.close()
            self._loader = torch.utils.data.DataLoader(
                _Draws(self),
                batch_sampler=self._parts,
                num_workers=workers,
                collate_fn=_as_is,
                prefetch_factor=2,
                persistent_workers=True,
                multiprocessing_context="fork",
                worker_init_fn=forget_parent_thread_exits,
                generator=torch.Generator().manual_seed(0),  # leaves the global RNG (dropout's) alone
            )
        return self._loader

    def close(self) -> None:
        """Stop the loader processes, if any ran."""
        loader, self._loader = self._loader, None
        running = getattr(loader, "_iterator", None)
        if running is not None:
            running._shutdown_workers()

    @property
    def rejects(self) -> list[Reject]:
        """The examples found undecodable so far, in index order."""
        return [self.bad[i] for i in sorted(self.bad)]


class _Parts:
    """The loader's batch sampler: each index list of the current call to ``Streamed.batches``,
    with its key, as the (key, index) pairs a loader process reads (set before each call; the
    sampler runs in the training process)."""

    def __init__(self) -> None:
        self.parts: Sequence[Sequence[int]] = ()
        self.key = ""

    def __iter__(self) -> Iterator[list[tuple[str, int]]]:
        for part in self.parts:
            yield [(self.key, i) for i in part]

    def __len__(self) -> int:
        return len(self.parts)


class _Draws(torch.utils.data.Dataset):
    """A loader process's view of a ``Streamed`` set: a list of (key, index) pairs -> ``draw``."""

    def __init__(self, streamed: Streamed) -> None:
        self.streamed = streamed

    def __getitems__(self, pairs: list[tuple[str, int]]) -> tuple[list[Any], dict[int, Reject]]:
        key = pairs[0][0] if pairs else ""
        return self.streamed.draw([i for _, i in pairs], key, private=True)

    def __getitem__(self, pair: tuple[str, int]) -> tuple[list[Any], dict[int, Reject]]:
        return self.__getitems__([pair])


def _as_is(drawn: Any) -> Any:
    """The loader's collate: a drawn part goes to the fine-tune loop as the process made it."""
    return drawn


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
