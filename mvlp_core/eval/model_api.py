"""What the heads need from a model, bound in one object: the UniGen inference methods of the
model contract (``score_targets``, ``generate``, ``image_features``, ``text_features``,
``match_score``, ``itc_temperature``), its ``forward`` for fine-tuning, and
``collate``/``Example``/``image_transform`` bound to its tokenizers and spec. ``EvalModel.load`` is the production path (``load_model`` on a
folder written by ``save_pretrained``); tests bind a small stand-in module the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mvlp_core.contract import StageError


@dataclass
class EvalModel:
    model: torch.nn.Module
    collate: Callable[[list[Any]], dict[str, torch.Tensor]]  # examples -> batch
    example: Callable[..., Any]  # the model's Example dataclass
    transform: Callable[[Any], torch.Tensor]  # PIL image -> [3,H,W]
    encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]  # texts -> encoder ids, mask
    save: Callable[[Path], None]  # write the model (save_pretrained)

    @classmethod
    def load(cls, folder: str | Path) -> EvalModel:
        """A UniGen from a ``save_pretrained`` folder (e.g. ``pretrain/final/``)."""
        from mvlp_core.model import (
            Example,
            collate,
            image_transform,
            load_model,
        )  # torch: only when evaluating

        folder = Path(folder)
        if not folder.exists():
            raise StageError(
                f"no model at {folder}; run the pretrain stage first (mvlp run SPEC --only pretrain)"
            )
        model = load_model(folder)
        tok, spec = model.tokenizers, model.spec

        def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            out = tok.encoder(
                texts, padding=True, truncation=True, max_length=spec.max_text_len, return_tensors="pt"
            )
            return out["input_ids"], out["attention_mask"]

        return cls(
            model,
            lambda exs: collate(exs, tok, spec),
            Example,
            image_transform(spec),
            encode,
            model.save_pretrained,
        )

    def to(self, device: str | torch.device) -> EvalModel:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
