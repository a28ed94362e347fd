"""UniGen (BLIP-2 ViT + Q-Former, XLM-R, GPT-2) — the model the `pretrain` stage trains and
`iglue-eval` evaluates. See CONTRACT-model.md for the interface the trainer and eval rely on."""

from mvlp_core.model.batch import Example, collate, image_transform
from mvlp_core.model.tokenizers import TASK_IDS, TASK_TOKENS, Tokenizers, build_tokenizers, load_tokenizers
from mvlp_core.model.unigen import UniGen, build_model, load_model

__all__ = [
    "TASK_IDS",
    "TASK_TOKENS",
    "Example",
    "Tokenizers",
    "UniGen",
    "build_model",
    "build_tokenizers",
    "collate",
    "image_transform",
    "load_model",
    "load_tokenizers",
]
