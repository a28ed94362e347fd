"""UniGen (BLIP-2 ViT + Q-Former, XLM-R, GPT-2) — the model the `pretrain` stage trains and
`iglue-eval` evaluates. What the training loop relies on: `forward(batch)` returns `loss` and a
`loss_<task>` per task it trained (mvlp_core/train/loop.py logs and plots whatever it returns);
what the IGLUE heads rely on: the inference methods bound in mvlp_core/eval/model_api.py."""

from mvlp_core.model.batch import Example, collate, image_transform
from mvlp_core.model.tokenizers import (
    TASK_IDS,
    TASK_TOKENS,
    Tokenizers,
    build_tokenizers,
    load_tokenizers,
)
from mvlp_core.model.unigen import UniGen, base_shaped_configs, build_model, load_model

__all__ = [
    "TASK_IDS",
    "TASK_TOKENS",
    "Example",
    "Tokenizers",
    "UniGen",
    "base_shaped_configs",
    "build_model",
    "build_tokenizers",
    "collate",
    "image_transform",
    "load_model",
    "load_tokenizers",
]
