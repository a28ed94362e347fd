"""UniGen's losses: image–text InfoNCE (both ways, gathered across data-parallel ranks),
ALBEF-style hard negative mining for [match]."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(*xs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, int]:
    """All ranks' rows of tensors that share their rows (`[N, ...]` each) -> (each one's rows of
    every rank `[N_all, ...]`, valid [N_all], offset of this rank's rows).

    Ranks may hold different row counts (not every sample has an image and a caption), so rows are
    padded to the largest count and `valid` marks real ones. The gather is differentiable: each
    rank's rows also get the gradient of every other rank's loss, where they are negatives, so
    the ranks' summed gradients are those of one big batch (open_clip's local loss with
    gather_with_grad). The tensors travel side by side in one collective (and their gradients in
    one all-reduce): every collective is a point where all ranks wait for the slowest. Every rank
    must call this, and backpropagate through its result, at the same steps, even with no rows of
    its own. Single process: the tensors as they are.
    """
    rows = xs[0].shape[0]
    if not distributed():
        return list(xs), torch.ones(rows, dtype=torch.bool, device=xs[0].device), 0
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([rows], device=xs[0].device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    most = max(counts)
    widths = [math.prod(x.shape[1:]) for x in xs]
    flat = torch.cat([x.reshape(rows, w) for x, w in zip(xs, widths)], dim=1)  # dtypes promoted
    padded = torch.cat([flat, flat.new_zeros(most - rows, flat.shape[1])])
    gathered = _AllGather.apply(padded).flatten(0, 1)
    parts = gathered.split(widths, dim=1)
    valid = torch.zeros(world, most, dtype=torch.bool, device=xs[0].device)
    for r, c in enumerate(counts):
        valid[r, :c] = True
    out = [p.reshape(-1, *x.shape[1:]).to(x.dtype) for p, x in zip(parts, xs)]
    return out, valid.flatten(), rank * most


class _AllGather(torch.autograd.Function):
    """[N, ...] on each rank -> [world, N, ...] everywhere; backward sums every rank's gradient
    for this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """InfoNCE both ways between L2-normalised image and text features of the same rows:
    (CE(image->texts) + CE(text->images)) / 2, negatives = every other row on every rank. A rank
    without rows gets a zero loss that still takes part in the gathers."""
    (all_image, all_text), valid, offset = gather_with_grad(image, text)
    if image.shape[0] == 0:
        return (all_image.sum() + all_text.sum()) * 0.0
    targets = torch.arange(image.shape[0], device=image.device) + offset
    i2t = image @ all_text.t() / temperature
    t2i = text @ all_image.t() / temperature
    i2t = i2t.masked_fill(~valid, float("-inf"))
    t2i = t2i.masked_fill(~valid, float("-inf"))
    return (F.cross_entropy(i2t, targets) + F.cross_entropy(t2i, targets)) / 2


def mine_hard_negatives(
    similarity: torch.Tensor, positive: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ALBEF's hard negatives from an in-batch image×text similarity matrix [N, N].

    For each image, a text drawn with probability ∝ softmax(similarity row) over its negatives,
    never one of its positives (`positive[i, j]` true: the diagonal and identical texts); and for
    each text an image
    likewise. Rows with no possible negative are dropped. Returns (image_idx, text_idx) of the
    image→text negatives and (image_idx, text_idx) of the text→image negatives.
    """
    with torch.no_grad():
        sim = similarity.detach().float()
        out = []
        for scores, pos in ((sim, positive), (sim.t(), positive.t())):
            # the positives left out before the softmax: after it, a positive far above the rest
            # (s/τ at a small τ) would leave every negative's weight at 0 and the row without one
            weights = F.softmax(scores.masked_fill(pos, float("-inf")), dim=1).nan_to_num(0.0)
            rows = torch.nonzero(weights.sum(dim=1) > 0).flatten()
            if len(rows):
                picks = torch.multinomial(weights[rows], 1, generator=generator).flatten()
            else:
                picks = rows
            out.append((rows, picks))
        (img_a, txt_a), (txt_b, img_b) = out
        return img_a, txt_a, img_b, txt_b
