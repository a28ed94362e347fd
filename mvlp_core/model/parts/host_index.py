"""Positions of a mask as indices made on the host, in collate, and the guard that says whether a
batch still fits them.

A model that selects rows or tokens by a boolean mask on the device makes the host ask how many
there are (on a GPU, a synchronisation each time); with the indices made in collate it selects
with `index_select`, whose size the host knows. The guard, an empty [0, *mask.shape] tensor,
travels with the batch: a batch cut along its first dimension afterwards keeps the guard's
shape, so `fitting` sees the mismatch and falls back to the mask.
"""

from __future__ import annotations

import torch


def flat_index(mask: torch.Tensor) -> torch.Tensor:
    """The positions of `mask`'s True entries in its flattened order."""
    return mask.flatten().nonzero(as_tuple=True)[0]


def guard(mask: torch.Tensor) -> torch.Tensor:
    """The empty tensor that records the shape `flat_index(mask)` indexes."""
    return torch.empty(0, *mask.shape, dtype=torch.bool)


def fitting(index: torch.Tensor | None, made_for: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """`index` where it was made for a mask of `mask`'s shape (`made_for`: its guard), else the
    index made from `mask` here (on a GPU, a synchronisation)."""
    if index is None or made_for is None or made_for.shape[1:] != mask.shape:
        return flat_index(mask)
    return index


def label_index(labels: torch.Tensor, at: str, of: str, ignore: int = -100) -> dict[str, torch.Tensor]:
    """The labelled positions of `labels` (not `ignore`) as a flat index under key `at`, its guard
    under `of`: what a collate puts in the batch for the model to select them with."""
    labelled = labels != ignore
    return {at: flat_index(labelled), of: guard(labelled)}
