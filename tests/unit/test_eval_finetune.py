"""The fine-tune loop's learning rates: a model's HEAD_PARAMS learn at lr × head_lr_scale, and
frozen prefixes stay where pretraining left them."""

import itertools
from typing import Any

import pytest
import torch
from torch import nn

from mvlp_core.contract import StageError
from mvlp_core.eval.finetune import finetune, frozen, param_groups
from mvlp_core.eval.model_api import EvalModel


class _Toy(nn.Module):
    HEAD_PARAMS = ("gate.",)

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(2, 1)
        self.gate = nn.Linear(2, 1)

    def forward(self, batch: dict) -> dict:
        return {"loss": ((self.body(batch["x"]) + self.gate(batch["x"]) - batch["y"]) ** 2).mean()}


def _bound(model: nn.Module) -> EvalModel:
    def collate(examples):
        return {"x": torch.stack([x for x, _ in examples]), "y": torch.stack([y for _, y in examples])}

    return EvalModel(
        model, collate, tuple, lambda image: image, lambda texts: (None, None), lambda path: None
    )


def test_head_parameters_get_their_own_group_at_the_scaled_rate():
    groups = param_groups(_Toy(), 1e-3, 30.0)
    assert [g["lr"] for g in groups] == [1e-3, 3e-2]
    assert [len(g["params"]) for g in groups] == [2, 2]
    assert len(param_groups(nn.Linear(2, 1), 1e-3, 30.0)) == 1  # a model without heads: one group


def _finetuned(**options: Any) -> tuple[_Toy, dict[str, torch.Tensor]]:
    """A seeded _Toy fine-tuned with `options` on 8 random examples, and its parameters from before."""
    torch.manual_seed(0)
    model = _Toy()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples = [(torch.randn(2), torch.randn(1)) for _ in range(8)]
    dev = itertools.count()  # every epoch scores higher than the last: the trained weights are kept
    finetune(_bound(model), examples, lambda em: float(next(dev)), **options)
    return model, before


def test_one_step_moves_the_head_scale_times_further_than_the_body():
    model, before = _finetuned(epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0, head_lr_scale=10.0)
    step = {n: (p.detach() - before[n]).abs() for n, p in model.named_parameters()}
    # Adam's first step moves every coordinate by about its learning rate
    assert torch.allclose(step["body.weight"], torch.full((1, 2), 1e-3), rtol=1e-2)
    assert torch.allclose(step["gate.weight"], torch.full((1, 2), 1e-2), rtol=1e-2)


def test_frozen_prefixes_stay_fixed_while_the_rest_trains():
    model, before = _finetuned(epochs=2, batch_size=4, lr=1e-2, freeze=("body.",))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in ("body.weight", "body.bias"))
    assert not torch.equal(after["gate.weight"], before["gate.weight"])


def test_a_freeze_prefix_that_names_nothing_is_an_error_listing_the_parts():
    with pytest.raises(
        StageError, match=r"\['text_encoder.embeddings'\] names no parameter.*\['body', 'gate'\]"
    ):
        with frozen(_Toy(), ("text_encoder.embeddings",)):
            pass
