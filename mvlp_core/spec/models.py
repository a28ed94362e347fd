"""Which models a spec trains: the `model` section (one model, any family) or `models` (several,
each named, trained and evaluated on the same shards: a leaderboard of published recipes).

`model` is keyed by `family` (mvlp_core/model/families.py); a section that names none is UniGen's,
so specs written before families existed load unchanged. A `models` entry is a model section with
a `name` and, where this model trains differently, `pretrain` fields that replace the shared ones
(its paper's batch, learning rate or weight decay)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from mvlp_core.spec.base import Strict
from mvlp_core.spec.model import ModelSpec
from mvlp_core.spec.model_ernie import ErnieModelSpec
from mvlp_core.spec.model_wsmvlp import WsmvlpModelSpec

MODEL_SPECS = (ModelSpec, WsmvlpModelSpec, ErnieModelSpec)
AnyModelSpec = Annotated[ModelSpec | WsmvlpModelSpec | ErnieModelSpec, Field(discriminator="family")]
FAMILY_TAGS = frozenset(cls.model_fields["family"].default for cls in MODEL_SPECS)


def with_family(raw: Any) -> Any:
    """A model section as written, with `family: unigen` where it names none."""
    if isinstance(raw, dict) and "family" not in raw:
        return {**raw, "family": "unigen"}
    return raw


class NamedModel(Strict):
    """One entry of `models`: written flat, `{name: wsmvlp, family: wsmvlp, size: tiny, pretrain: {...}}`."""

    name: str = Field(
        pattern=r"^[a-zA-Z0-9_-]+$", description="names its outputs: pretrain/<name>/, tables' rows"
    )
    model: AnyModelSpec
    pretrain: dict[str, Any] = Field(
        {}, description="pretrain fields that differ for this model (replace the shared section's)"
    )
    iglue: dict[str, Any] = Field(
        {},
        description="iglue fields that differ for this model, merged into the shared section (its"
        " heads may fine-tune at other rates: {finetune: {tasks: {xvnli: {lr: 2e-5}}}})",
    )

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "model" in raw:
            return raw
        rest = {k: v for k, v in raw.items() if k not in ENTRY_FIELDS}
        out = {"model": with_family(rest), "pretrain": raw.get("pretrain", {}), "iglue": raw.get("iglue", {})}
        return {**out, "name": raw["name"]} if "name" in raw else out


ENTRY_FIELDS = ("name", "pretrain", "iglue")  # a `models` entry's own fields; the rest is its model


def inherit(base: dict[str, Any], entry: Any) -> Any:
    """A flat `models` entry as written, its model fields laid over `base` (the `model` section as
    written) where both name the same family; any other entry as it is."""
    if not isinstance(entry, dict) or "model" in entry:
        return entry
    own = {k: v for k, v in entry.items() if k not in ENTRY_FIELDS}
    if with_family(own)["family"] != base["family"]:
        return entry
    return {**{k: v for k, v in entry.items() if k in ENTRY_FIELDS}, **merged(base, own)}


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied: nested sections merge, every other value is replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
