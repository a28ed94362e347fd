"""A tiny learnable stand-in for UniGen with the contract's inference methods, for tests only:
images become their mean colour, texts hashed bags of words, targets a fixed word vocabulary."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mvlp_core.eval.model_api import EvalModel

WORDS = [
    "<unk>",
    "entailment",
    "neutral",
    "contradiction",
    "true",
    "false",
    "yes",
    "no",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "star",
]
DIM = 64


@dataclass
class Example:
    task: str
    image: torch.Tensor | None
    source: str
    source_lang: str
    target: str
    caption: str | None = None


def bag(text: str) -> torch.Tensor:
    v = torch.zeros(DIM)
    for w in (text or "").lower().split():
        v[zlib.crc32(w.encode()) % DIM] += 1
    return v


def transform(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)


class StandIn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls = torch.nn.Linear(6 + DIM, len(WORDS))
        self.img = torch.nn.Linear(3, 16)
        self.txt = torch.nn.Linear(DIM, 16)

    @staticmethod
    def colour(pixels: torch.Tensor) -> torch.Tensor:  # [B,3,H,W] or [B,K,3,H,W] -> [B,6]
        if pixels.dim() == 4:
            pixels = pixels.unsqueeze(1)
        means = pixels.mean(dim=(-1, -2))  # [B,K,3]
        return torch.cat([means[:, 0], means[:, -1]], dim=1)

    def logits(self, batch: dict) -> torch.Tensor:
        return self.cls(torch.cat([self.colour(batch["pixel_values"]), batch["enc"]], dim=1))

    def forward(self, batch: dict) -> dict:
        loss = F.cross_entropy(self.logits(batch), batch["target"])
        if batch["has_caption"].any():
            i = F.normalize(self.img(self.colour(batch["pixel_values"])[:, :3]), dim=-1)
            t = F.normalize(self.txt(batch["itc"]), dim=-1)
            loss = loss + F.cross_entropy(10 * t @ i.T, torch.arange(len(t)))
        return {"loss": loss}

    def itc_temperature(self) -> float:
        return 0.1  # forward's InfoNCE logits are 10 x the cosine

    def score_targets(self, batch: dict) -> torch.Tensor:
        return F.log_softmax(self.logits(batch), dim=-1).gather(1, batch["target"][:, None])[:, 0]

    def generate(self, batch: dict, max_new_tokens: int) -> list[str]:
        return [WORDS[i] for i in self.logits(batch).argmax(dim=1).tolist()]

    def image_features(self, pixels: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, F.normalize(self.img(self.colour(pixels)[:, :3]), dim=-1)

    def text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.txt(ids.float()), dim=-1)

    def match_score(self, pixels, ids, mask) -> torch.Tensor:
        return (self.image_features(pixels)[1] * self.text_features(ids, mask)).sum(-1)


def collate(examples: list[Example]) -> dict:
    pixels = torch.stack([e.image for e in examples])
    return {
        "pixel_values": pixels,
        "enc": torch.stack([bag(e.source) for e in examples]),
        "itc": torch.stack([bag(e.caption or "") for e in examples]),
        "has_caption": torch.tensor([bool(e.caption) for e in examples]),
        "target": torch.tensor([WORDS.index(e.target) if e.target in WORDS else 0 for e in examples]),
    }


def bind(model: StandIn) -> EvalModel:
    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.stack([bag(t) for t in texts])
        return ids, torch.ones(len(texts), 1)

    def save(folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), Path(folder) / "standin.pt")

    return EvalModel(model, collate, Example, transform, encode, save)


def load(folder: Path) -> EvalModel:
    model = StandIn()
    path = Path(folder) / "standin.pt"
    if path.exists():
        model.load_state_dict(torch.load(path))
    return bind(model)
