"""The training loop without Ray: loss falls, the schedule and decay groups are UniGen's, a run
resumes from its newest checkpoint at that step, and a corrupt checkpoint is a clear error."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mvlp_core.spec import PretrainSpec
from mvlp_core.train import curves, loop


class Toy(torch.nn.Module):
    """A stand-in with the model's interface: forward(batch) -> losses; save/from_pretrained."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch: dict) -> dict:
        err = (self.lin(batch["x"]).squeeze(-1) * self.scale - batch["y"]) ** 2
        cap = err[batch["task"] == 1].mean() if (batch["task"] == 1).any() else err.sum() * 0
        return {
            "loss": err.mean(),
            "loss_cap": cap,
            "loss_trans": err.sum() * 0,
            "tokens": torch.tensor(len(err)),
        }

    @staticmethod
    def loss_presence(out: dict) -> dict:
        """loss_trans is a placeholder for a task the batches never hold: not logged."""
        return {"loss_cap": torch.tensor(True), "loss_trans": torch.tensor(False)}

    def save_pretrained(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), Path(folder) / "weights.pt")

    @classmethod
    def from_pretrained(cls, folder: Path) -> Toy:
        m = cls()
        m.load_state_dict(torch.load(Path(folder) / "weights.pt"))
        return m


def batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    while True:
        x = torch.randn(16, 4, generator=g)
        yield {"x": x, "y": x @ w, "task": torch.ones(16, dtype=torch.long), "skipped": torch.tensor(0)}


def cfg(**kw) -> PretrainSpec:
    base = dict(lr=0.3, warmup_steps=2, max_steps=30, checkpoint_every=10, log_every=5, keep_checkpoints=2)
    return PretrainSpec(**{**base, **kw})


def test_loss_falls_and_metrics_are_written(tmp_path: Path) -> None:
    reporter = loop.LocalReporter(tmp_path / "ckpt", keep=2)
    last = loop.train(Toy(), batches(), cfg(), reporter, metrics_path=tmp_path / "m.jsonl")
    rows = curves.read_metrics(tmp_path / "m.jsonl")
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30] and last["step"] == 30
    assert rows[-1]["loss"] < 0.2 * rows[0]["loss"]
    assert all(r["samples_per_second"] > 0 and "loss_cap" in r and "loss_trans" not in r for r in rows)
    assert [p.name for p in reporter.checkpoints()] == ["checkpoint_00000020", "checkpoint_00000030"]
    png = curves.plot(rows, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_and_decay_groups() -> None:
    c = cfg(lr=1e-4, warmup_steps=2000, max_steps=10000)
    assert loop.lr_at(0, c) == pytest.approx(5e-8) and loop.lr_at(1999, c) == pytest.approx(1e-4)
    assert loop.lr_at(6000, c) == pytest.approx(5e-5) and loop.lr_at(10000, c) == 0
    # ERNIE-UniX²'s: 4k warm-up steps, cosine decay to 1e-6 (§4.3.1)
    e = cfg(lr=1e-4, warmup_steps=4000, max_steps=60000, lr_schedule="cosine", min_lr=1e-6)
    assert loop.lr_at(3999, e) == pytest.approx(1e-4) and loop.lr_at(60000, e) == pytest.approx(1e-6)
    assert loop.lr_at(32000, e) == pytest.approx(1e-6 + (1e-4 - 1e-6) / 2)  # half-way: the cosine's middle
    assert loop.lr_at(18000, e) == pytest.approx(1e-6 + (1e-4 - 1e-6) * (1 + math.cos(math.pi / 4)) / 2)
    with pytest.raises(ValueError, match="min_lr"):
        cfg(lr=1e-5, min_lr=1e-4)
    groups = loop.param_groups(Toy(), 0.05)
    assert [len(g["params"]) for g in groups] == [1, 2] and [g["weight_decay"] for g in groups] == [0.05, 0.0]


def test_resume_from_newest_checkpoint_not_step_zero(tmp_path: Path) -> None:
    reporter = loop.LocalReporter(tmp_path / "ckpt")
    loop.train(Toy(), batches(), cfg(max_steps=20), reporter, metrics_path=tmp_path / "m.jsonl")
    model = Toy()
    last = loop.train(model, batches(1), cfg(max_steps=30), reporter, metrics_path=tmp_path / "m.jsonl")
    rows = curves.read_metrics(tmp_path / "m.jsonl")
    assert {"event": "resume", "step": 20} in rows
    assert last["restored_from"] == 20 and last["samples"] == 30 * 16
    assert [r["step"] for r in curves.history(rows)] == [5, 10, 15, 20, 25, 30]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    reporter = loop.LocalReporter(tmp_path / "ckpt")
    loop.train(Toy(), batches(), cfg(max_steps=10), reporter)
    bad = reporter.checkpoints()[-1]
    (bad / loop.TRAIN_STATE).write_bytes(b"garbage")
    with pytest.raises(loop.CheckpointError, match=f"cannot load checkpoint {bad}.*--force"):
        loop.train(Toy(), batches(), cfg(max_steps=20), reporter)


def test_metrics_stay_on_device_between_log_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU step must not wait on the host: the loop reads device values (losses, tokens, which
    tasks a step measured) only at log steps, once each, never per step."""
    reads: list[str] = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _name=name, _original=original, **kw):
            reads.append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    reporter = loop.LocalReporter(tmp_path / "ckpt")
    source = ({k: v for k, v in b.items() if k != "skipped"} for b in batches())
    loop.train(Toy(), source, cfg(max_steps=20, log_every=10, checkpoint_every=100), reporter)
    # Toy's own forward reads one bool a step ((task == 1).any()); everything else is the loop's
    per_step = reads.count("__bool__") / 20
    assert per_step == 1
    assert reads.count("tolist") == 2 and reads.count("item") == reads.count("__float__") == 0


def test_batches_reach_the_device_one_ahead_with_their_host_figures() -> None:
    pulled: list[int] = []

    def source():
        for i in range(3):
            pulled.append(i)
            yield {"task": torch.zeros(4 + i), "skipped": torch.tensor(i), "x": torch.full((2,), float(i))}

    feed = loop.on_device(source(), Toy(), torch.device("cpu"))
    batch, host = next(feed)
    assert pulled == [0, 1]  # the next batch is on its way while this one trains
    assert batch["x"].tolist() == [0.0, 0.0] and "skipped" not in batch
    assert (host.samples, host.skipped, host.flops) == (4, 0, None)
    assert [h.samples for _, h in feed] == [5, 6]


def _four_steps_logged_every_two(tmp_path: Path, source) -> list[dict]:
    """Toy trained 4 steps on `source`, metrics logged every 2: the logged rows."""
    metrics = tmp_path / "m.jsonl"
    loop.train(
        Toy(), source, cfg(max_steps=4, log_every=2), loop.LocalReporter(tmp_path / "c"), metrics_path=metrics
    )
    return curves.read_metrics(metrics)


def test_a_window_is_timed_until_the_device_has_finished_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU the host runs ahead of the device until the window's values are read: the read is
    where the last steps' work finishes, so it belongs inside the window's time. Here the read
    takes 10 s of a clock that otherwise stands still."""
    clock = [0.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])
    read = loop.Window.read

    def device_catches_up(self):
        clock[0] += 10.0
        return read(self)

    monkeypatch.setattr(loop.Window, "read", device_catches_up)
    rows = _four_steps_logged_every_two(tmp_path, batches())
    assert [r["samples_per_second"] for r in rows] == [2 * 16 / 10.0] * 2


def test_skips_are_summed_over_the_loader_workers(tmp_path: Path) -> None:
    """Each DataLoader worker counts the samples it skipped since it started; the loop logs the
    sum of every worker's latest count, not the count of whichever worker made the last batch."""

    def two_workers():
        for i, b in enumerate(batches()):
            worker = i % 2
            yield {
                **b,
                "skipped": torch.tensor([3, 5][worker] + i // 2),
                "loader_worker": torch.tensor(worker),
            }

    rows = _four_steps_logged_every_two(tmp_path, two_workers())
    # after step 2 the workers' latest counts are 3 (batch 0) and 5 (batch 1); after step 4, 4 and 6
    assert [r["skipped"] for r in rows] == [8, 10]


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA L4", 121e12),
        ("Tesla T4", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_mfu_peak_is_looked_up_per_device(
    name: str, peak: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert loop.peak_flops(torch.device("cuda", 0)) == peak
    assert loop.peak_flops(torch.device("cpu")) is None
