"""Loading what a model is built from, with the one-line errors every family gives: a Hugging Face
part by name or path (no hub here, no such folder, not in the cache: which spec field, and the
fix), and the weights a family's `save_pretrained` wrote (incomplete or from another version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mvlp_core.contract import StageError


def from_pretrained(cls: Any, name: str, field: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(name)`, or a StageError naming `model.<field>` and how to supply it."""
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise StageError(
            f"cannot load model.{field} {name!r} ({type(err).__name__}: {err}); the model hub is not"
            f" reachable here: set model.{field} to a local checkpoint folder (save_pretrained) or"
            " pre-populate the Hugging Face cache (HF_HOME)"
        ) from None


def load_weights(model: nn.Module, path: Path) -> None:
    """The safetensors file `path` into `model`, or a StageError saying to re-save the checkpoint."""
    from safetensors.torch import load_model

    try:
        load_model(model, str(path))
    except (OSError, RuntimeError) as err:
        raise StageError(
            f"cannot load the weights of {path.parent}: {err}; the checkpoint is incomplete or from"
            " another model version: re-save it"
        ) from None
