"""What the heads need from a model, bound in one object: the model with its scoring methods
(UniGen's ``score_targets``, ``generate``, ``match_score``; every dual-encoder family's
``image_features``, ``text_features``, ``itc_temperature``; ``fused``/``match_logit`` where a family
has a fused [CLS]), its ``forward`` for fine-tuning, and the family's ``collate``/example
type/image transform/text encoding (``EvalBindings``). ``EvalModel.load`` is the production path
(a folder written by ``save_pretrained``, dispatched on the family it records); tests bind a small
module the same way.

``family`` names the model's family (``mvlp_core.model.family``), which picks each task's IGLUE head
(the family's ``IGLUE`` map); None, for a module bound by hand, reads every task the generative way.
A folder holding ``task_model.json`` is a model fine-tuned with a discriminative head
(``mvlp_core.eval.task_model``): its family model is in ``base/``, loaded by its family, and the
head is put back around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mvlp_core.contract import StageError

TASK_MODEL_FILE = "task_model.json"  # marks a folder saved by task_model.TaskModel


@dataclass
class EvalModel:
    model: torch.nn.Module
    collate: Callable[[list[Any]], dict[str, torch.Tensor]] | None  # examples -> batch (generative)
    example: Callable[..., Any] | None  # the model's example type (generative heads)
    transform: Callable[[Any], torch.Tensor]  # PIL image -> [3,H,W]
    encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]  # texts -> encoder ids, mask
    save: Callable[[Path], None]  # write the model (save_pretrained)
    family: str | None = None  # the model family (picks the IGLUE heads); None: bound by hand

    @classmethod
    def load(
        cls, folder: str | Path, image_size: int | None = None, max_text_len: int | None = None
    ) -> EvalModel:
        """The model saved in ``folder`` (e.g. ``pretrain/final/``), bound by its family; its
        images at ``image_size`` and its texts cut at ``max_text_len`` tokens where given
        (``iglue.image_size``, ``iglue.max_text_len``)."""
        from mvlp_core.model import families  # torch: only when evaluating

        folder = Path(folder)
        if not folder.exists():
            raise StageError(
                f"no model at {folder}; run the pretrain stage first (mvlp run SPEC --only pretrain)"
            )
        if (folder / TASK_MODEL_FILE).is_file():
            from mvlp_core.eval.task_model import BASE_FOLDER, load_task_model

            return load_task_model(folder, cls.load(folder / BASE_FOLDER, image_size, max_text_len))
        name = families.family_of(folder)
        fam = families.family(name)
        model = fam.load(folder)
        b = fam.eval_bindings(model, image_size=image_size, max_text_len=max_text_len)
        return cls(model, b.collate, b.example, b.transform, b.encode, model.save_pretrained, name)

    def to(self, device: str | torch.device) -> EvalModel:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
