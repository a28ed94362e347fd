"""The GPU bench's ceiling measurements (benchmarks/gpu_ceiling.py) run their code paths on CPU at
the tiny size: the ViT's forward FLOPs as the convention counts them, no MFU off a known GPU, and a
busy fraction of a real profiled step."""

from __future__ import annotations

import math

import torch
from _model_world import examples, single_thread, tiny_spec, tokenizers  # noqa: F401

from benchmarks import gpu_ceiling
from mvlp_core.model.unigen import build_model, collate


def _vit_forward_counted(model, vit) -> None:
    """vit_forward on 4 images: FLOPs as the convention counts them, no MFU on CPU, the frozen
    ViT in eval mode as a training step runs it (no dropout), whatever mode the model was left in."""
    modes = []
    vit.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    model.eval()
    vit.train()  # as a model loaded from a checkpoint is: every module in train mode
    out = gpu_ceiling.vit_forward(model, batch_size=4, device=torch.device("cpu"), bf16=True, steps=2)
    assert modes and not any(modes)
    patches = (model.spec.image_size // vit.config.patch_size) ** 2 + 1
    matmul = sum(m.weight.numel() for m in vit.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    layers, width = vit.config.num_hidden_layers, vit.config.hidden_size
    assert out["flops"] == 2 * matmul * 4 * patches + 4 * layers * width * 4 * patches**2
    assert out["seconds"] > 0 and math.isnan(out["mfu"])


def test_vit_forward_alone_counts_its_flops_and_gives_no_mfu_on_cpu() -> None:
    model = build_model(tiny_spec(freeze=["vision"]), tokenizers())  # frozen, as UniGen's is
    _vit_forward_counted(model, model.image_encoder.vision_model)


def test_busy_fraction_of_a_profiled_step_and_its_report(tmp_path) -> None:
    spec = tiny_spec()
    model = build_model(spec, tokenizers())
    batches = iter([collate(examples(spec, 8, seed=s), tokenizers(), spec) for s in range(8)])
    report = tmp_path / "profiles" / "step.txt"
    busy = gpu_ceiling.busy_fraction(model, batches, torch.device("cpu"), bf16=False, steps=3, report=report)
    assert 0.05 < busy <= 1.05  # one thread: operator time cannot much exceed the wall time
    text = report.read_text()
    assert text.startswith("2 profiled steps on cpu (CPU)")
    counts = dict(item.rsplit(" ", 1) for item in text.splitlines()[1].removeprefix("per step: ").split(", "))
    assert float(counts["aten::_local_scalar_dense"]) >= 1  # the step's remaining host reads, counted
    assert "by host time" in text and "aten::addmm" in text


def test_vit_forward_alone_of_the_weakly_supervised_model() -> None:
    from test_wsmvlp_model import micro

    model = micro(freeze_vision=True)
    _vit_forward_counted(model, model.vision)


def test_the_weakly_supervised_gpu_bench_trains_and_measures_its_ceiling_on_cpu(tmp_path) -> None:
    """bench_gpu_wsmvlp's whole path, at the micro size: the synthetic image and text stages it
    writes feed every stream, the loop logs its steady throughput, the ceiling is measured."""
    from benchmarks.bench_gpu_wsmvlp import measure
    from mvlp_core.train import curves
    from mvlp_core.train.streams import text_stream_index

    sizes = {"image": 8, "parallel": 8, "mono": 8}
    out = measure(tmp_path, "cpu", "micro", sizes, steps=4, log_every=2, report=tmp_path / "step.txt")
    assert "by host time" in (tmp_path / "step.txt").read_text()
    index = text_stream_index(tmp_path / "text-shard")
    assert set(index.mono) == {"en", "de", "fr", "cs", "ja", "zh"}
    assert set(index.parallel) == {"en-de", "en-fr", "en-cs", "en-ja", "en-zh"}
    rows = curves.history(curves.read_metrics(tmp_path / "pretrain" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [2, 4]
    streams = {k for k in rows[-1] if k.startswith("loss_")}
    assert {"loss_vlm", "loss_tlm", "loss_xmlm", "loss_itm", "loss_ucl_image", "loss_ucl_text"} <= streams
    assert out["samples_per_second"] > 0 and out["vit_seconds"] > 0 and 0 < out["busy"] <= 1.05


def test_the_ernie_gpu_bench_trains_and_measures_its_ceiling_on_cpu(tmp_path) -> None:
    """bench_gpu_ernie's whole path, at the micro size: its recipe's tasks drawn over the steps
    from the synthetic stages, the loop's MFU numerator from the family's count, the ceiling."""
    from benchmarks.bench_gpu_ernie import measure
    from mvlp_core.train import curves

    out = measure(tmp_path, "cpu", "micro", batch=8, steps=16, log_every=8, report=tmp_path / "step.txt")
    assert "by host time" in (tmp_path / "step.txt").read_text()
    rows = curves.history(curves.read_metrics(tmp_path / "pretrain" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [8, 16]
    assert len({k for r in rows for k in r if k.startswith("loss_")}) >= 4  # one task a step, several drawn
    assert out["samples_per_second"] > 0 and out["vit_seconds"] > 0 and 0 < out["busy"] <= 1.05


def test_the_unigen_gpu_bench_trains_measures_its_ceiling_and_writes_its_rows_on_cpu(tmp_path) -> None:
    """bench_gpu_train's whole path at the tiny size, as `gpu_device.sh run` takes it on a GPU
    (there with Ray Train first): its synthetic shard stage, the plain loop in bf16 and fp32, the
    ceiling after the bf16 run, then the harness rows (MFU stands at 0 here: no peak on CPU)."""
    from benchmarks import bench_gpu_train

    report = tmp_path / "step.txt"
    figures, ceiling = bench_gpu_train.measure(
        tmp_path, how="plain", device="cpu", size="tiny", steps=4, batch=8, report=report
    )
    assert set(figures) == {("plain", True), ("plain", False)}
    assert all(f[0]["samples_per_second"] > 0 and f[0]["loss"] > 0 for f in figures.values())
    assert ceiling["vit_seconds"] > 0 and math.isnan(ceiling["vit_mfu"]) and 0 < ceiling["busy"] <= 1.05
    assert "by host time" in report.read_text()
    with_mfu = {v: [{**f, "mfu": 0.0} for f in runs] for v, runs in figures.items()}
    rows = bench_gpu_train.rows(with_mfu, ceiling, "CPU", runs=1)
    assert [r["name"] for r in rows] == [
        "gpu_train_bf16_vs_fp32",
        "gpu_vit_forward_mfu",
        "gpu_step_busy_fraction",
    ]
