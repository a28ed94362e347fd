"""The contract every registered model family keeps (mvlp_core/model/families.py), run over each:
built at the micro size from the shards' texts, batches from its own data recipe, forward/backward
until every trainable parameter has received a gradient (one batch where a step holds every
stream; a family that trains one task a step gets there over its first steps), save -> load with
identical outputs of every IGLUE scoring method it has, on two items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from mvlp_core.model import FAMILIES, family, family_of, load_model
from mvlp_core.spec import load_spec
from mvlp_core.spec.pipeline import PipelineSpec
from mvlp_core.train.job import build, prepare
from tests.unit.test_streams import write_images, write_text_shards

MICRO = {
    "unigen": {"family": "unigen", "size": "micro"},
    "wsmvlp": {"family": "wsmvlp", "size": "micro", "batch": {"image": 4, "parallel": 4, "mono": 4}},
    "ernie": {"family": "ernie", "size": "micro", "batch": 4},
}
SCORING = ("image_features", "text_features", "match_logit", "match_score", "fused")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family-contract")
    (root / "shard").mkdir()
    for s in range(2):
        write_images(
            root / "shard" / f"shard-{s:05d}.tar", [f"s{s}i{i}" for i in range(6)], languages=("de",)
        )
    write_text_shards(root / "text-shard")
    return {"shard": root / "shard", "text-shard": root / "text-shard"}


def _spec(name: str, workdir: Path) -> PipelineSpec:
    raw = load_spec("demo", workdir=str(workdir)).model_dump(mode="json")
    raw.pop("models", None)
    raw["model"] = MICRO[name]
    raw["pretrain"] = {**raw["pretrain"], "batch_size": 4, "seed": 0}
    return PipelineSpec.model_validate(raw)


def _scores(model: torch.nn.Module, em_inputs: dict[str, Any]) -> dict[str, tuple[torch.Tensor, ...]]:
    pixels, ids, mask = em_inputs["pixels"], em_inputs["ids"], em_inputs["mask"]
    out = {}
    with torch.no_grad():
        for method in SCORING:
            if not hasattr(model, method):
                continue
            fn = getattr(model, method)
            args = (
                (pixels,)
                if method == "image_features"
                else (ids, mask)
                if method == "text_features"
                else (pixels, ids, mask)
            )
            got = fn(*args)  # UniGen's image_features: (features, states)
            out[method] = got if isinstance(got, tuple) else (got,)
    return out


def test_every_family_is_registered_with_its_hooks() -> None:
    assert set(MICRO) == set(FAMILIES)
    for name in FAMILIES:
        fam = family(name)
        assert fam.NAME == name
        assert set(fam.IGLUE) == {"xvnli", "xgqa", "marvl", "xflickrco", "wit"}
        for hook in ("build", "load", "train_batches", "eval_bindings"):
            assert callable(getattr(fam, hook)), (name, hook)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_contract(name: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    spec = _spec(name, tmp_path)
    job = prepare(spec, inputs, tmp_path / "pretrain")  # tokenizers trained on the shards' texts
    assert family_of(job.init_dir) == name
    model, dataset = build(job, rank=0, world=1)
    model.train()
    # every trainable parameter but those only fine-tuning uses (UniGen's multi-image heads)
    later = getattr(model, "HEAD_PARAMS", ())
    expected = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith(later)]
    for step, batch in enumerate(dataset):
        assert int(batch.pop("skipped")) == 0
        batch.pop("n_samples", None)
        out = model(batch)
        losses = [k for k in out if k.startswith("loss_")]
        assert losses and torch.isfinite(out["loss"])
        out["loss"].backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        if no_grad == expected or step == 60:
            break
    assert no_grad == expected

    # save -> load: every scoring method gives identical outputs on two items
    model.eval()
    b = family(name).eval_bindings(model)
    images = [Image.new("RGB", (20, 20), c) for c in ((200, 20, 20), (20, 20, 200))]
    ids, mask = b.encode(["caption s0i1", "de sentence 3"])
    em_inputs = {"pixels": torch.stack([b.transform(im) for im in images]), "ids": ids, "mask": mask}
    before = _scores(model, em_inputs)
    assert {"image_features", "text_features"} <= set(before)
    assert all(t.shape[0] == 2 for v in before.values() for t in v)
    model.save_pretrained(tmp_path / "saved")
    again = load_model(tmp_path / "saved").eval()
    after = _scores(again, em_inputs)
    assert before.keys() == after.keys()
    for method in before:
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(before[method], after[method])), method
