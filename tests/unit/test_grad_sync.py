"""The two ways ranks average gradients (mvlp_core/train/grad_sync.py) train to the same weights,
with parameters some steps leave unused on one rank, and the loop calls the averaging."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mvlp_core.train import grad_sync

STEPS = 4


class Branchy(torch.nn.Module):
    """A trunk every step uses, a head only some inputs use, one part no step uses, and a
    constant buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 1)
        self.idle = torch.nn.Linear(6, 1)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor, use_head: bool) -> torch.Tensor:
        h = torch.tanh(self.trunk(x)) * self.scale
        return self.head(h).pow(2).mean() if use_head else h.pow(2).mean()


def _train(rank: int, out: str, port: int) -> None:
    """Both ways in turn on the same two ranks, from the same start."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for how in ("ddp", "allreduce"):
            torch.manual_seed(rank)  # different weights on each rank: both ways start from rank 0's
            model = Branchy()
            if how == "ddp":
                model = torch.nn.parallel.DistributedDataParallel(model, **grad_sync.ddp_options(model))
                sync = None
            else:
                sync = grad_sync.AllReduceGradients(model)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
            data = torch.Generator().manual_seed(100 + rank)
            for step in range(STEPS):
                # rank 1 uses the head on odd steps only; rank 0 never does
                model(torch.randn(5, 6, generator=data), rank == 1 and step % 2 == 1).backward()
                if sync is not None:
                    sync()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if rank == 0:
                module = getattr(model, "module", model)
                torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, f"{out}.{how}")
    finally:
        dist.barrier()  # neither rank tears gloo down while the other still talks to it
        dist.destroy_process_group()
    # gloo's threads can abort the process in the interpreter's own teardown ("terminate called
    # without an active exception", about one run in five on 2 busy cores), after the work is done
    # and saved: the rank leaves without that teardown
    os._exit(0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_allreduce_after_backward_trains_as_ddp(tmp_path: Path) -> None:
    """Same weights after a few SGD steps with weight decay: the head, which rank 1 alone uses on
    some steps, is averaged with rank 0's zeros; the part no rank uses is left alone (weight decay
    would move it were it given a zero gradient)."""
    out = tmp_path / "weights"
    mp.spawn(_train, args=(str(out), _free_port()), nprocs=2)
    ddp, flat = torch.load(f"{out}.ddp"), torch.load(f"{out}.allreduce")
    torch.manual_seed(0)
    start = Branchy().state_dict()
    for key in ("trunk.weight", "head.weight", "head.bias"):
        assert not torch.equal(ddp[key], start[key]), key
        assert torch.allclose(ddp[key], flat[key], atol=1e-6), key
    for key in ("idle.weight", "idle.bias"):
        assert torch.equal(ddp[key], start[key]) and torch.equal(flat[key], start[key]), key


def test_strategy_and_ddp_options() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert grad_sync.strategy("auto", cpu) == "allreduce"
    assert grad_sync.strategy("auto", gpu) == "ddp"
    assert grad_sync.strategy("ddp", cpu) == "ddp"
    assert grad_sync.ddp_options(Branchy()) == {"find_unused_parameters": True, "forward_sync_buffers": False}
    bn = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert grad_sync.ddp_options(bn)["forward_sync_buffers"] is True


@pytest.mark.parametrize("accum", [1, 2])
def test_the_loop_averages_after_the_last_micro_batch(accum: int, tmp_path: Path) -> None:
    from mvlp_core.spec import PretrainSpec
    from mvlp_core.train import loop

    model = Branchy()
    grads_at_sync: list[bool] = []

    def sync() -> None:
        grads_at_sync.append(model.trunk.weight.grad is not None)

    def batches():
        while True:
            yield {"x": torch.randn(3, 6), "n_samples": 3}

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, batch):
            return {"loss": self.inner(batch["x"], False)}

        def save_pretrained(self, folder: Path) -> None:
            folder.mkdir(parents=True)
            torch.save(self.inner.state_dict(), folder / "weights.pt")

    cfg = PretrainSpec(max_steps=3, grad_accum=accum, warmup_steps=0, log_every=10, checkpoint_every=10)
    loop.train(Wrapped(), batches(), cfg, loop.LocalReporter(tmp_path), grad_sync=sync)
    assert len(grads_at_sync) == 3 and all(grads_at_sync)
