"""What every spec section shares: strict models, perf-only fields, the fingerprinted view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SPECS_ROOT = Path(__file__).resolve().parents[2] / "data_specs"


def perf_only(default: Any, **kw: Any) -> Any:
    """A field that changes speed but never output: excluded from stage fingerprints."""
    return Field(default, json_schema_extra={"fingerprint": False}, **kw)


class Strict(BaseModel):
    # inf and nan are never a setting: a float field that takes one refuses it
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class SpecError(ValueError):
    """A spec that cannot run; the message names the field, the value and what is allowed."""


def fingerprint_config(model: BaseModel) -> dict[str, Any]:
    """The part of a spec section that determines output (perf-only fields dropped)."""
    out: dict[str, Any] = {}
    for name, f in type(model).model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("fingerprint") is False:
            continue
        value = getattr(model, name)
        out[name] = fingerprint_config(value) if isinstance(value, BaseModel) else value
    return out
