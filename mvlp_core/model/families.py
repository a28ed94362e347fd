"""The model families mvlp trains and evaluates, and the contract each one keeps.

A family is a package `mvlp_core/model/<name>/` whose `__init__` exposes (see docs/model-families.md):

- `NAME`, the value of the spec's `model.family` and of `family` in its saved config;
- `build(spec, texts, out_dir) -> nn.Module`: tokenizers and model, random from configs for the
  named random sizes (tokenizers trained on `texts`), from checkpoints by name or path for `base`,
  base-shaped with random weights for throughput runs (`weights: random`);
- `load(folder) -> nn.Module`: what `save_pretrained(folder)` wrote, outputs identical;
- `train_batches(job, model, rank, world) -> IterableDataset`: the records of the shard and
  text-shard stages turned into this family's batches for one rank;
- `eval_bindings(model, image_size=None, max_text_len=None) -> EvalBindings`: what IGLUE heads call
  besides the model's scoring methods, its images at `image_size` and its texts cut at
  `max_text_len` tokens where given (`iglue.image_size`, `iglue.max_text_len`).

The family's spec (a `model` section with `family: <name>`, mvlp_core/spec/) says which checkpoints
`build` reads (`checkpoints()`, for `mvlp plan`) and whether it is built with random weights
(`random_init`: the driver then trains its tokenizers on the shards' texts).

The model's `forward(batch)` returns `loss` and one `loss_<task>` per objective in the batch (the
loop logs and plots whatever it returns); `tokens` where it counts them. Which IGLUE heads a family
takes is its `IGLUE` map (task -> head kind: `generative` reads the task through the model's
decoder, `discriminative` puts a fresh head on its fused [CLS]; mvlp_core/eval/heads_discriminative.py),
and `FINETUNE_FREEZE` names the parameters IGLUE fine-tuning holds (name prefixes).

Checkpoints record their family: `"family"` in the saved config, which is `config.json`, or
`unigen.json` for UniGen (the name its checkpoints have always had).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mvlp_core.contract import StageError

FAMILIES = ("unigen", "wsmvlp", "ernie")
CONFIG_FILES = ("config.json", "unigen.json")  # where a saved model keeps its config


@dataclass(frozen=True)
class EvalBindings:
    """A loaded model's data side, as the IGLUE heads use it (mvlp_core/eval/model_api.py)."""

    transform: Callable[[Any], Any]  # PIL image -> the image tensor the model reads
    encode: Callable[[list[str]], tuple[Any, Any]]  # texts -> encoder ids, attention mask
    # generative heads only: examples -> the model's batch, and the family's example type
    collate: Callable[[list[Any]], dict[str, Any]] | None = None
    example: Callable[..., Any] | None = None


def family(name: str) -> ModuleType:
    """The family package registered as `name`."""
    if name not in FAMILIES:
        raise StageError(f"unknown model family {name!r}; registered: {', '.join(FAMILIES)}")
    # imported here, not at module level: torch loads only when a family is used; named statically
    # so a stage's fingerprint (the import graph of its code) covers every family's code
    from mvlp_core.model import ernie, unigen, wsmvlp

    return {"unigen": unigen, "wsmvlp": wsmvlp, "ernie": ernie}[name]


def family_of(folder: str | Path) -> str:
    """The family a saved model folder belongs to."""
    folder = Path(folder)
    for config in (folder / name for name in CONFIG_FILES):
        if config.is_file():
            # UniGen checkpoints saved before families existed name none: they are UniGen's
            return json.loads(config.read_text(encoding="utf-8")).get("family", "unigen")
    raise StageError(
        f"{folder} holds no saved model (no config.json naming a family, no unigen.json); give a"
        " folder written by save_pretrained, e.g. pretrain/final"
    )


def load_model(folder: str | Path):
    """The model saved in `folder`, built by the family its config names."""
    return family(family_of(folder)).load(folder)
