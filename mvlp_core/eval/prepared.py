"""An evaluation item reduced to what a head feeds the model: id, image file(s), source text, gold.

Images are resolved through the task's image root; an item whose image is missing or cannot be
decoded becomes a ``contract.Reject`` carrying the item id, and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mvlp_core.contract import Reject
from mvlp_core.eval.images import open_rgb


@dataclass(frozen=True)
class Prepared:
    id: str
    images: tuple[Path, ...]
    source: str
    lang: str
    gold: Any  # label word, True/False, answer string; None = no gold (XVNLI "-")


def keep_resolved(
    candidates: list[tuple[str, list[Path | None], str, str, Any]], refs: list[list[str]]
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


class ImageCache:
    """Transformed image tensors by path, so an image shared by many items is decoded once."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform
        self._cache: dict[Path, torch.Tensor | None] = {}

    def get(self, path: Path) -> torch.Tensor | None:
        if path not in self._cache:
            image = open_rgb(path)
            self._cache[path] = None if image is None else self.transform(image)
        return self._cache[path]

    def stack(self, paths: tuple[Path, ...]) -> torch.Tensor | None:
        tensors = [self.get(p) for p in paths]
        if any(t is None for t in tensors):
            return None
        return tensors[0] if len(tensors) == 1 else torch.stack(tensors)


def decode_all(
    items: list[Prepared], cache: ImageCache
) -> tuple[list[tuple[Prepared, torch.Tensor]], list[Reject]]:
    """Pair each item with its image tensor; undecodable images become ``bad_image`` rejects."""
    out, rejects = [], []
    for item in items:
        image = cache.stack(item.images)
        if image is None:
            rejects.append(Reject(item.id, "bad_image", ", ".join(map(str, item.images))))
        else:
            out.append((item, image))
    return out, rejects
