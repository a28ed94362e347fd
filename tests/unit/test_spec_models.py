"""The model section keyed by family and `models`: several named models on the same data, each
with the pretrain and iglue fields that differ for it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mvlp_core.spec import load_spec
from mvlp_core.spec.model import ModelSpec
from mvlp_core.spec.model_wsmvlp import WsmvlpModelSpec
from mvlp_core.spec.pipeline import PipelineSpec


def _raw(**changes) -> dict:
    raw = load_spec("demo", workdir="/tmp/mvlp-spec-models").model_dump(mode="json")
    raw.pop("model")
    raw.pop("models", None)
    return {**raw, **changes}


def test_a_model_section_without_family_is_unigen_and_family_picks_the_class() -> None:
    assert isinstance(PipelineSpec.model_validate(_raw(model={"size": "tiny"})).model, ModelSpec)
    ws = PipelineSpec.model_validate(_raw(model={"family": "wsmvlp", "size": "tiny"})).model
    assert isinstance(ws, WsmvlpModelSpec) and ws.batch.image == 512 and ws.freeze_vision is False
    with pytest.raises(ValidationError, match="wsmvlp"):  # a UniGen field under another family
        PipelineSpec.model_validate(_raw(model={"family": "wsmvlp", "num_query_tokens": 8}))


def test_models_are_named_and_each_trains_with_its_own_fields() -> None:
    spec = PipelineSpec.model_validate(
        _raw(
            models=[
                {"name": "unigen", "size": "tiny"},
                {
                    "name": "ws",
                    "family": "wsmvlp",
                    "size": "micro",
                    "pretrain": {"weight_decay": 0.2, "loader": {"shuffle_buffer": 7}},
                    "iglue": {"finetune": {"tasks": {"xvnli": {"lr": 2e-5}}}},
                },
            ]
        )
    )
    (n1, unigen), (n2, ws) = spec.trained_models()
    assert (n1, n2) == ("unigen", "ws")
    assert isinstance(unigen.model, ModelSpec) and isinstance(ws.model, WsmvlpModelSpec)
    assert unigen.pretrain.weight_decay == spec.pretrain.weight_decay and ws.pretrain.weight_decay == 0.2
    # nested sections merge: the rest of the shared loader and fine-tune settings stay
    assert (
        ws.pretrain.loader.shuffle_buffer == 7
        and ws.pretrain.loader.num_workers == spec.pretrain.loader.num_workers
    )
    assert ws.iglue.finetune.tasks["xvnli"].lr == 2e-5
    assert ws.iglue.finetune.tasks["marvl"] == spec.iglue.finetune.tasks["marvl"]
    assert unigen.iglue == spec.iglue
    assert {unigen.pretrain.run_name, ws.pretrain.run_name} == {"pretrain-unigen", "pretrain-ws"}
    assert spec.trained_models()[0][1].models is None
    one = PipelineSpec.model_validate(_raw(model={"size": "tiny"}))
    assert one.trained_models() == [(None, one)]


def test_a_models_own_iglue_fields_are_in_the_evaluations_fingerprint() -> None:
    """Changing one model's fine-tune (its entry's `iglue`) re-runs iglue-eval; before, only the
    shared section counted and a finished unit kept its old settings."""
    from mvlp_core.stages.iglue_eval import config

    def spec(ws_iglue: dict, shared_lr: float = 1e-3) -> PipelineSpec:
        raw = _raw(
            models=[{"name": "unigen", "size": "tiny"}, {"name": "ws", "family": "wsmvlp", "iglue": ws_iglue}]
        )
        raw["iglue"]["finetune"]["lr"] = shared_lr
        return PipelineSpec.model_validate(raw)

    base = config(spec({"finetune": {"lr": 2e-5}}))
    assert config(spec({"finetune": {"lr": 2e-5}})) == base
    assert config(spec({"finetune": {"lr": 4e-5}})) != base
    assert config(spec({"finetune": {"lr": 2e-5}, "image_size": 48})) != base
    assert config(spec({"finetune": {"lr": 2e-5}}, shared_lr=5e-4)) != base
    assert set(base["iglue"]) == {"unigen", "ws"}


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([{"name": "a", "size": "tiny"}, {"name": "a", "size": "micro"}], "distinct"),
        ([{"name": "a", "pretrain": {"lr_typo": 1}}], r"models\[a\].pretrain: unknown field"),
        ([{"name": "a", "iglue": {"finetune": {"epochs": -1}}}], "epochs"),
        ([{"name": "a b"}], "pattern"),
        ([], "at least 1"),
    ],
)
def test_bad_models_entries_are_one_clear_error(models: list, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PipelineSpec.model_validate(_raw(models=models))
