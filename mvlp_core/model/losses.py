"""UniGen's losses: image–text InfoNCE (both ways, gathered across DDP ranks), ALBEF-style hard
negative mining for [match], and per-task token cross-entropy over target positions only."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All ranks' rows of `x` -> (rows [N_all, D], valid [N_all], offset of this rank's rows).

    Ranks may hold different row counts (not every sample has an image and a caption), so rows are
    padded to the largest count and `valid` marks real ones. The local slice is `x` itself, so the
    gradient flows to this rank's features; other ranks' rows are constants here (each rank
    computes the loss for its own rows, as CLIP/ALBEF do). Single process: `x` as is.
    """
    if not _distributed():
        return x, torch.ones(x.shape[0], dtype=torch.bool, device=x.device), 0
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    most = max(counts)
    padded = torch.zeros(most, *x.shape[1:], dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x.detach()
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    parts[rank] = torch.cat([x, padded[x.shape[0]:]]) if most > x.shape[0] else x
    valid = torch.zeros(world, most, dtype=torch.bool, device=x.device)
    for r, c in enumerate(counts):
        valid[r, :c] = True
    return torch.cat(parts), valid.flatten(), rank * most


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """InfoNCE both ways between L2-normalised image and text features of the same rows:
    (CE(image->texts) + CE(text->images)) / 2, negatives = every other row on every rank."""
    if image.shape[0] == 0:
        return image.sum() * 0.0
    all_image, valid, offset = gather_with_grad(image)
    all_text, _, _ = gather_with_grad(text)
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

    For each image, a text drawn with probability ∝ softmax(similarity row), never one of its
    positives (`positive[i, j]` true: the diagonal and identical texts); and for each text an image
    likewise. Rows with no possible negative are dropped. Returns (image_idx, text_idx) of the
    image→text negatives and (image_idx, text_idx) of the text→image negatives.
    """
    with torch.no_grad():
        sim = similarity.detach().float()
        out = []
        for scores, pos in ((sim, positive), (sim.t(), positive.t())):
            weights = F.softmax(scores, dim=1).masked_fill(pos, 0.0)
            rows = torch.nonzero(weights.sum(dim=1) > 0).flatten()
            if len(rows):
                picks = torch.multinomial(weights[rows], 1, generator=generator).flatten()
            else:
                picks = rows
            out.append((rows, picks))
        (img_a, txt_a), (txt_b, img_b) = out
        return img_a, txt_a, img_b, txt_b


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy: position t predicts labels[t+1]; -100 is ignored.
    Returns per-row sums of the loss [B] and per-row counts of supervised tokens [B]."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100,
                           reduction="none")  # fmt: skip
    return loss.sum(dim=1), (shift_labels != -100).sum(dim=1)
