"""The weakly-supervised model gathers its masked positions through flat indices collate makes on
the host, so its MLM heads do not ask the device how many there are (a GPU synchronisation each):
the same losses and gradients as selecting by the labels, a stream cut row-wise after collate
falling back to its labels, and the MLM gathers free of host syncs."""

from __future__ import annotations

import pytest
import torch
from test_wsmvlp_model import batch, micro, single_thread  # noqa: F401

from benchmarks.host_syncs import HostSyncs

STREAMS = ("image", "parallel", "mono")


@pytest.fixture(scope="module")
def world():
    model = micro()
    return model, batch(model, seed=3)


def _step(model, b) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    model.generator = torch.Generator().manual_seed(5)  # the ITM negatives
    out = model(b)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.item() for k, v in out.items() if k.startswith("loss")}, grads


def _labels_only(b: dict) -> dict:
    return {
        k: {n: t for n, t in v.items() if not n.startswith(("labels_at", "labels_of"))} if k in STREAMS else v
        for k, v in b.items()
    }


def test_host_indices_gather_what_the_labels_select(world) -> None:
    model, b = world
    assert all(
        f"labels_at{s}" in b[k]
        for k, s in (("image", ""), ("parallel", "_a"), ("parallel", "_b"), ("mono", ""))
    )
    indexed, by_labels = _step(model, b), _step(model, _labels_only(b))
    assert {"loss_vlm", "loss_tlm", "loss_xmlm"} <= set(indexed[0])
    assert indexed[0] == pytest.approx(by_labels[0], rel=1e-6)
    for name, grad in indexed[1].items():
        torch.testing.assert_close(grad, by_labels[1][name], msg=name)


def test_a_stream_cut_after_collate_reads_its_labels(world) -> None:
    model, b = world
    cut = {k: {n: t[1:] for n, t in v.items()} if k == "mono" else v for k, v in b.items()}
    assert _step(model, cut)[0] == pytest.approx(_step(model, _labels_only(cut))[0], rel=1e-6)


def test_the_mlm_gathers_make_no_host_sync(world) -> None:
    model, b = world
    with HostSyncs() as indexed:
        _step(model, b)
    with HostSyncs() as by_labels:
        _step(model, _labels_only(b))
    assert not [w for (_, w) in indexed.hits if " _mlm:" in w], indexed.table()
    assert indexed.total < by_labels.total
