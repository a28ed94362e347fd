"""A family model with a fresh IGLUE head (VOLTA's protocol), trained by ``finetune()`` unchanged.

``TaskModel`` wraps a model that exposes a fused [CLS] (``fused(pixels, ids, mask) -> [B,H]``,
``match_logit``, ``image_features``, ``text_features``, ``itc_temperature``, ``save_pretrained``)
and adds the head a task needs:

- ``xvnli``: ``Linear(H, 3)`` on ``fused(image, hypothesis)``, cross-entropy (wsmVLP's ``cls_head``);
- ``xgqa``: VOLTA's ``SimpleClassifier`` ``Linear(H, 2H) → GeLU → LayerNorm → Linear(2H, n_answers)``
  on ``fused(image, question)``, BCE with logits against the one-hot answer, scaled by the number of
  answers as VOLTA does (``loss.mean() * target.size(1)``); an answer outside the label set is an
  all-zero target (VOLTA keeps such questions);
- ``marvl``: (left image, statement) and (right image, statement) through ``fused`` in one call, the
  two vectors concatenated → ``SimpleClassifier(2H, 2H, 2)``, cross-entropy;
- ``xflickrco``, ``wit``: no new parameters; the loss trains the family's own matching head and
  contrastive space (``_retrieval_loss``).

Its ``forward(batch)`` returns ``{"loss": ...}``; ``HEAD_PARAMS = ("head.",)`` lets the fresh head
learn at ``lr × head_lr_scale``. The family model's parameters are named ``base.<its name>``.

``save_pretrained(folder)`` writes the (fine-tuned) family model with its own ``save_pretrained``
into ``folder/base/``, the head into ``head.safetensors`` and, last, ``task_model.json`` (task, head
kind, width, labels), which is what ``EvalModel.load`` recognises a saved TaskModel by; it then
loads ``base/`` by its family and calls ``load_task_model``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mvlp_core import atomic
from mvlp_core.contract import StageError
from mvlp_core.eval.heads_retrieval import image_embedding
from mvlp_core.eval.model_api import TASK_MODEL_FILE, EvalModel
from mvlp_core.model.losses import mine_hard_negatives

BASE_FOLDER = "base"
HEAD_WEIGHTS = "head.safetensors"
FORMAT = 1
IGNORE = -100  # a label cross-entropy skips (an XVNLI "-" item, a prediction batch)
HEAD_OF_TASK = {"xvnli": "linear", "xgqa": "mlp", "marvl": "pair", "xflickrco": "itm", "wit": "itm"}


class SimpleClassifier(nn.Sequential):
    """VOLTA's ``SimpleClassifier``: Linear(in, hid) → GeLU → LayerNorm(hid, eps 1e-12) → Linear(hid, out)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__(
            nn.Linear(d_in, d_hidden),
            nn.GELU(),
            nn.LayerNorm(d_hidden, eps=1e-12),
            nn.Linear(d_hidden, d_out),
        )


def build_head(kind: str, hidden: int, n_labels: int) -> nn.Module:
    """A fresh head, linear layers drawn as BERT/VOLTA initialise them (normal, std 0.02; zero bias)."""
    if kind == "linear":
        head: nn.Module = nn.Linear(hidden, n_labels)
    elif kind == "mlp":
        head = SimpleClassifier(hidden, 2 * hidden, n_labels)
    elif kind == "pair":
        head = SimpleClassifier(2 * hidden, 2 * hidden, n_labels)
    elif kind == "itm":
        return nn.Module()  # retrieval trains the family's own matching head
    else:
        raise ValueError(
            f"unknown head kind {kind!r}; known: {', '.join(sorted(set(HEAD_OF_TASK.values())))}"
        )
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return head


def answer_targets(labels: torch.Tensor, n_answers: int) -> torch.Tensor:
    """One-hot rows over the answers (GQA has one answer per question, so VQA's soft score is 1);
    a negative label (an answer outside the label set) gives an all-zero row."""
    target = torch.zeros(len(labels), n_answers, device=labels.device)
    known = labels >= 0
    target[known.nonzero(as_tuple=True)[0], labels[known]] = 1.0
    return target


class TaskModel(nn.Module):
    """A family model (``base``) and a fresh head for one IGLUE task (module docstring)."""

    HEAD_PARAMS = ("head.",)

    def __init__(self, base: nn.Module, task: str, hidden: int, labels: Sequence[str] = ()) -> None:
        super().__init__()
        if task not in HEAD_OF_TASK:
            raise ValueError(f"no discriminative head for task {task!r}; known: {', '.join(HEAD_OF_TASK)}")
        self.base, self.task, self.hidden = base, task, int(hidden)
        self.kind, self.labels = HEAD_OF_TASK[task], tuple(labels)
        self.itm_negatives = "hard"  # iglue.finetune.itm_negatives: how retrieval's ITM pairs are drawn
        if self.kind != "itm" and len(self.labels) < 2:
            raise StageError(f"{task}: a classifier head needs at least 2 labels, got {list(self.labels)}")
        self.head = build_head(self.kind, self.hidden, len(self.labels))

    # classification -------------------------------------------------------------------------------
    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        """What the head reads: ``fused`` [B,H]; for MaRVL the left and right pairs' [B,2H]."""
        pixels, ids, mask = batch["pixel_values"], batch["ids"], batch["mask"]
        if self.kind != "pair":
            return self.base.fused(pixels, ids, mask)
        if pixels.dim() != 5 or pixels.shape[1] != 2:
            raise ValueError(f"{self.task}: expected [B,2,C,H,W] image pairs, got {tuple(pixels.shape)}")
        b = len(ids)
        both = self.base.fused(torch.cat([pixels[:, 0], pixels[:, 1]]), ids.repeat(2, 1), mask.repeat(2, 1))
        return torch.cat([both[:b], both[b:]], dim=1)

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """[B, n_labels] class scores (classifier tasks)."""
        return self.head(self.features(batch))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.kind == "itm":
            return self._retrieval_loss(batch)
        logits, labels = self.logits(batch), batch["labels"]
        if self.kind == "mlp":
            target = answer_targets(labels, logits.shape[1]).to(logits.dtype)
            loss = F.binary_cross_entropy_with_logits(logits, target) * target.shape[1]
        else:
            loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
        return {"loss": loss}

    # retrieval ------------------------------------------------------------------------------------
    def _retrieval_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """ALBEF's retrieval fine-tune: ITC over the batch (targets spread over the captions of the
        same image, as ALBEF's ``idx`` targets) plus ITM as binary cross-entropy on ``match_logit``
        for each positive pair, the pair of its image with a caption of another image, and of its
        caption with another image. The negatives are in-batch hard ones, drawn ∝ softmax of the
        contrastive similarity (ALBEF, and the weakly-supervised paper's released fine-tune), or
        uniform with ``itm_negatives`` "random"."""
        pixels, ids, mask, group = batch["pixel_values"], batch["ids"], batch["mask"], batch["group"]
        same = group[:, None] == group[None, :]
        base = self.base
        # a family with tower states runs each tower once, its negatives re-paired from the states
        # (as ALBEF); another encodes the re-paired images and texts again
        states = hasattr(base, "match_logit_states")
        if states:
            image_states, text_states = base.encode_image(pixels), base.encode_text(ids, mask)
            image = base.image_features_states(image_states)
            text = base.text_features_states(text_states)
        else:
            image = image_embedding(base.image_features(pixels))
            text = base.text_features(ids, mask)
        sim = text @ image.T / base.itc_temperature()
        targets = same.to(sim.dtype) / same.sum(dim=1, keepdim=True)
        itc = (
            -(
                (F.log_softmax(sim, dim=1) * targets).sum(1).mean()
                + (F.log_softmax(sim.T, dim=1) * targets).sum(1).mean()
            )
            / 2
        )
        # (image, other text) pairs, then (other image, text) pairs; the positives first
        scores = sim.T if self.itm_negatives == "hard" else torch.zeros_like(sim)  # zeros: uniform
        img_a, txt_a, img_b, txt_b = mine_hard_negatives(scores, same)
        positives = torch.arange(len(group), device=group.device)
        images, texts = torch.cat([positives, img_a, img_b]), torch.cat([positives, txt_a, txt_b])
        if states:
            logit = base.match_logit_states(image_states[images], text_states[texts], mask[texts])
        else:
            logit = base.match_logit(pixels[images], ids[texts], mask[texts])
        target = torch.zeros_like(logit)
        target[: len(group)] = 1.0
        itm = F.binary_cross_entropy_with_logits(logit, target)
        return {"loss": itc + itm, "loss_itc": itc.detach(), "loss_itm": itm.detach()}

    # persistence ----------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        """``base/`` by the family's own ``save_pretrained``, the head, then ``task_model.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.base.save_pretrained(folder / BASE_FOLDER)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(folder / HEAD_WEIGHTS))
        meta = {"format": FORMAT, "task": self.task, "head": self.kind, "hidden": self.hidden}
        atomic.write_json(folder / TASK_MODEL_FILE, {**meta, "labels": list(self.labels)})


@dataclass
class Example:
    """A discriminative fine-tuning/prediction example: image [C,H,W] (MaRVL: [2,C,H,W]), text,
    label index (``IGNORE`` for none; xGQA: -1 for an answer outside the label set) and, for
    retrieval, the image's key (captions of one image are never each other's negatives)."""

    image: torch.Tensor
    text: str
    label: int = IGNORE
    group: str = ""


def collate_with(encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]) -> Callable:
    """examples -> {pixel_values, ids, mask, labels, group} with the family's text encoding."""

    def collate(examples: list[Example]) -> dict[str, torch.Tensor]:
        ids, mask = encode([e.text for e in examples])
        groups = {g: i for i, g in enumerate(dict.fromkeys(e.group for e in examples))}
        return {
            "pixel_values": torch.stack([e.image for e in examples]),
            "ids": ids,
            "mask": mask,
            "labels": torch.tensor([e.label for e in examples], dtype=torch.long),
            "group": torch.tensor([groups[e.group] for e in examples], dtype=torch.long),
        }

    return collate


def bind(em: EvalModel, model: TaskModel) -> EvalModel:
    """An EvalModel over ``model`` that keeps ``em``'s image transform, text encoding and family."""
    return EvalModel(
        model, collate_with(em.encode), Example, em.transform, em.encode, model.save_pretrained, em.family
    )


@torch.no_grad()
def fused_width(em: EvalModel) -> int:
    """H, read off one ``fused`` call on a blank image and a one-word text (families do not all
    carry a ``hidden_size``, and the fused vector's width is what the head reads)."""
    from PIL import Image

    model = em.model
    if not callable(getattr(model, "fused", None)):
        raise StageError(
            f"the {em.family} model has no fused(pixels, ids, mask) method, which IGLUE's "
            "discriminative heads read; map the task to 'generative' in the family's IGLUE"
        )
    was_training = model.training
    model.eval()
    try:
        pixels = em.transform(Image.new("RGB", (64, 64))).unsqueeze(0).to(em.device)
        ids, mask = em.encode(["a"])
        out = model.fused(pixels, ids.to(em.device), mask.to(em.device))
    finally:
        model.train(was_training)
    return int(out.shape[-1])


def wrap(em: EvalModel, task: str, labels: Sequence[str] = ()) -> EvalModel:
    """``em``'s model with a fresh ``task`` head on its device, bound for ``finetune()``."""
    model = TaskModel(em.model, task, fused_width(em), labels).to(em.device)
    return bind(em, model)


def load_task_model(folder: str | Path, base: EvalModel) -> EvalModel:
    """The TaskModel saved in ``folder`` around ``base`` (the loaded ``folder/base/``)."""
    folder = Path(folder)
    meta = json.loads((folder / TASK_MODEL_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise StageError(
            f"{folder / TASK_MODEL_FILE}: format {meta.get('format')!r}; this version reads {FORMAT}"
        )
    model = TaskModel(base.model, meta["task"], meta["hidden"], meta["labels"])
    model.head.load_state_dict(load_file(str(folder / HEAD_WEIGHTS)))
    return bind(base, model.to(base.device))
