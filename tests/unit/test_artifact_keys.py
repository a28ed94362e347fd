"""Artifact keys a stage derives from a model's name, which the spec lets hold capitals and
underscores, reach Prefect in the form it takes (lowercase letters, digits, dashes): the pretrain
flow once failed after training, and on every re-run, on a key like `pretrain-curve-UniGen_base`."""

from __future__ import annotations

import pytest
from prefect.types.names import ArtifactKey
from pydantic import TypeAdapter, ValidationError

from flows.artifacts import artifact_key
from mvlp_core.spec import load_spec


def test_keys_from_model_names_are_keys_prefect_takes(tmp_path) -> None:
    spec = load_spec("demo", ["models=[{name: UniGen_base}, {name: wsmvlp_v2, family: wsmvlp}]"], tmp_path)
    names = [m.name for m in spec.models]
    assert names == ["UniGen_base", "wsmvlp_v2"]  # the spec takes them as they are
    prefect_key = TypeAdapter(ArtifactKey)
    for name in names:
        raw = f"pretrain-curve-{name}"
        with pytest.raises(ValidationError):
            prefect_key.validate_python(raw)
        assert (
            prefect_key.validate_python(artifact_key(raw))
            == f"pretrain-curve-{name.lower().replace('_', '-')}"
        )
    assert artifact_key("iglue-eval-table") == "iglue-eval-table"  # a key already valid is unchanged
