"""The contrastive loss against hand-computed values, and hard-negative mining."""

from __future__ import annotations

import math

import pytest
import torch
from _model_world import single_thread  # noqa: F401

from mvlp_core.model.losses import contrastive_loss, mine_hard_negatives


def _xent(row: list[float], target: int) -> float:
    return -(row[target] - math.log(sum(math.exp(v) for v in row)))


def test_contrastive_loss_2x2_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = math.sqrt(0.5)
    text = torch.tensor([[s, s], [0.0, 1.0]])
    t = 0.5
    # sims: image0·text0 = s, image0·text1 = 0, image1·text0 = s, image1·text1 = 1
    i2t = [_xent([s / t, 0.0], 0), _xent([s / t, 1 / t], 1)]
    t2i = [_xent([s / t, s / t], 0), _xent([0.0, 1 / t], 1)]
    expected = (sum(i2t) / 2 + sum(t2i) / 2) / 2
    got = contrastive_loss(image, text, torch.tensor(t))
    assert abs(got.item() - expected) < 1e-6


def test_contrastive_loss_3x3_by_hand_and_its_gradient_lowers_it():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    t = 0.1
    sim = (image.detach() @ text.t()).tolist()
    cols = [[sim[r][c] for r in range(3)] for c in range(3)]
    expected = (
        sum(_xent([v / t for v in sim[i]], i) for i in range(3)) / 3
        + sum(_xent([v / t for v in cols[i]], i) for i in range(3)) / 3
    ) / 2
    loss = contrastive_loss(image, text, torch.tensor(t))
    assert abs(loss.item() - expected) < 1e-5
    loss.backward()
    stepped = contrastive_loss(image.detach() - 0.01 * image.grad, text, torch.tensor(t))
    assert stepped < loss
    # matched pairs give a lower loss than shuffled ones
    assert contrastive_loss(text, text, torch.tensor(t)) < contrastive_loss(
        text, text.roll(1, 0), torch.tensor(t)
    )


def test_hard_negatives_never_pick_a_positive():
    gen = torch.Generator().manual_seed(0)
    n = 6
    for _ in range(50):
        sim = torch.randn(n, n, generator=gen) * 3 + torch.eye(n) * 10  # positives most similar
        positive = torch.eye(n, dtype=torch.bool)
        positive[0, 1] = positive[1, 0] = True  # rows 0 and 1 share a caption
        img_a, txt_a, img_b, txt_b = mine_hard_negatives(sim, positive, gen)
        assert len(img_a) == len(txt_b) == n
        assert not positive[img_a, txt_a].any() and not positive[img_b, txt_b].any()


def test_hard_negatives_prefer_similar_texts_and_drop_rows_without_negatives():
    gen = torch.Generator().manual_seed(0)
    sim = torch.tensor([[5.0, 4.0, -4.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    picks = [int(mine_hard_negatives(sim, torch.eye(3, dtype=torch.bool), gen)[1][0]) for _ in range(60)]
    assert picks.count(1) > 50  # text 1 is far more similar to image 0 than text 2
    everything = torch.ones(2, 2, dtype=torch.bool)
    img_a, txt_a, img_b, txt_b = mine_hard_negatives(torch.zeros(2, 2), everything, gen)
    assert len(img_a) == len(txt_a) == len(img_b) == len(txt_b) == 0


def _rank_loss(rank: int, world: int, port: int, feats, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    image, text = feats
    rows = slice(0, 2) if rank == 0 else slice(2, 5)  # ranks hold different row counts
    local = image[rows].clone().requires_grad_()
    local_text = text[rows].clone().requires_grad_()
    loss = contrastive_loss(local, local_text, torch.tensor(0.1))
    loss.backward()
    empty = image[:0].clone().requires_grad_() if rank == 0 else image[2:5].clone().requires_grad_()
    other = contrastive_loss(empty, text[:0] if rank == 0 else text[2:5], torch.tensor(0.1))
    other.backward()  # rank 0 without rows still joins both gathers and their backward
    out[rank] = (loss.item(), local.grad.clone(), other.item(), local_text.grad.clone())
    dist.destroy_process_group()


@pytest.mark.slow  # spawns two interpreters that import torch + transformers (~1 min on 2 busy cores)
def test_under_ddp_every_rank_contrasts_against_all_ranks_rows():
    import socket

    import torch.multiprocessing as mp

    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank_loss, args=(2, port, (image, text), out), nprocs=2)
    # one process, one batch: the ranks' losses, and the gradient of their sum for every row
    feats = image.clone().requires_grad_()
    texts = text.clone().requires_grad_()
    sim = feats @ texts.t() / 0.1
    total = 0.0
    for rank, rows in ((0, range(0, 2)), (1, range(2, 5))):
        rows = list(rows)
        expected = (
            torch.nn.functional.cross_entropy(sim[rows], torch.tensor(rows))
            + torch.nn.functional.cross_entropy(sim.t()[rows], torch.tensor(rows))
        ) / 2
        assert abs(out[rank][0] - expected.item()) < 1e-5
        total = total + expected
    total.backward()
    # each rank's rows get the gradient of both ranks' losses (they are the other's negatives)
    assert torch.allclose(out[0][1], feats.grad[0:2], atol=1e-5)
    assert torch.allclose(out[1][1], feats.grad[2:5], atol=1e-5)
    # the captions, gathered beside the images in the same collective, get theirs as well
    assert torch.allclose(out[0][3], texts.grad[0:2], atol=1e-5)
    assert torch.allclose(out[1][3], texts.grad[2:5], atol=1e-5)
    assert out[0][2] == 0.0 and out[1][2] > 0


def test_hard_negatives_survive_a_small_temperature():
    """At τ 0.001 (the clamp's floor) the positives' s/τ is hundreds above the rest: taken out of
    the softmax first, every row still gets a negative, the most similar one."""
    gen = torch.Generator().manual_seed(0)
    s = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.9, 0.6], [0.3, 0.4, 0.9]]) / 0.001
    img_a, txt_a, img_b, txt_b = mine_hard_negatives(s, torch.eye(3, dtype=torch.bool), gen)
    assert img_a.tolist() == [0, 1, 2] and txt_a.tolist() == [1, 2, 1]
    assert txt_b.tolist() == [0, 1, 2] and img_b.tolist() == [2, 0, 1]
