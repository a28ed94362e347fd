"""Loading a Hugging Face part by name or path, with the one-line error every family gives when
it cannot (no hub here, no such folder, not in the cache): which spec field, and the fix."""

from __future__ import annotations

from typing import Any

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
