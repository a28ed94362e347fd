"""What the families built from a ViT and XLM-R layers share (the weakly-supervised mVLP,
ERNIE-UniX²): their HF configs from a size's dims, the ViT checkpoint's normalisation, the saved
folder (config.json, model.safetensors, tokenizer/), and the IGLUE heads' image and text bindings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, ViTConfig, XLMRobertaConfig

from mvlp_core.atomic import atomic_path, write_json
from mvlp_core.contract import StageError
from mvlp_core.model.families import EvalBindings
from mvlp_core.model.parts.images import resize_rgb
from mvlp_core.model.parts.pretrained import load_weights

DEFAULT_MEAN = (0.5, 0.5, 0.5)  # the ImageNet-21k ViT-B/16's, and the random sizes'
DEFAULT_STD = (0.5, 0.5, 0.5)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
XLMR_VOCAB = 250002  # xlm-roberta-base's embedding rows: the published shape of base + random


def hf_json(config) -> dict:
    """An HF config as the plain dict a saved folder keeps."""
    return json.loads(config.to_json_string(use_diff=False))


def configs(dims, base: bool, image_size: int, tokenizer) -> tuple[dict, dict]:
    """ViT and XLM-R configs from a size's dims (hidden_size, num_heads, intermediate_size,
    vision_layers, text_layers, fusion_layers, patch_size, max_positions): base has the published
    shapes and dropout 0.1, micro/tiny no dropout."""
    dropout = 0.1 if base else 0.0
    # BERT's std 0.02 is for width 768; at width 32 it leaves every sub-layer's output ~5x below
    # the embeddings it is added to, and the [CLS] state hardly varies across texts (the
    # contrastive and ITM losses then sit at chance for hundreds of steps). Keep the base scale.
    std = 0.02 * (768 / dims.hidden_size) ** 0.5 if not base else 0.02
    width = dict(
        hidden_size=dims.hidden_size,
        num_attention_heads=dims.num_heads,
        intermediate_size=dims.intermediate_size,
        initializer_range=std,
    )
    vision = ViTConfig(
        **width,
        num_hidden_layers=dims.vision_layers,
        image_size=image_size,
        patch_size=dims.patch_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    text = XLMRobertaConfig(
        **width,
        vocab_size=max(XLMR_VOCAB, len(tokenizer)) if base else len(tokenizer),
        num_hidden_layers=dims.text_layers + dims.fusion_layers,
        max_position_embeddings=dims.max_positions + 2,  # XLM-R's positions start after the pad id
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return hf_json(vision), hf_json(text)


def image_stats(name: str) -> tuple[list[float], list[float]]:
    """The ViT checkpoint's normalisation (its image processor's mean/std), 0.5/0.5 if it has none."""
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(name)
        return list(processor.image_mean), list(processor.image_std)
    except (OSError, ValueError, ImportError, AttributeError, TypeError):
        return list(DEFAULT_MEAN), list(DEFAULT_STD)


def save(model, folder: str | Path) -> None:
    """Write `model` (its `config` dict, weights and tokenizer) to `folder`."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_model(model, str(tmp))
    write_json(folder / CONFIG_FILE, model.config)


def load(folder: str | Path, family: str, cls: type) -> Any:
    """`cls(config, tokenizer)` with the weights of a folder `save` wrote for `family`."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if config.get("family") != family:
        raise StageError(
            f'{folder} is not a {family} checkpoint (no {CONFIG_FILE} with "family": "{family}"); give a'
            f" folder written by {cls.__name__}.save_pretrained"
        )
    model = cls(config, AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR)))
    load_weights(model, folder / WEIGHTS_FILE)
    return model


def eval_bindings(model, image_size: int | None, max_text_len: int | None, default_len: int) -> EvalBindings:
    """The image transform the model was built with, or one to `image_size` (its ViT interpolates
    its position embeddings to any multiple of its patch), and its tokenizer cut at
    `max_text_len` tokens where given, else at `default_len`."""
    tok = model.tokenizer
    length = max_text_len or default_len
    positions = model.embeddings.position_embeddings.num_embeddings - 2  # XLM-R's start after the pad id
    if length > positions:
        raise StageError(
            f"iglue.max_text_len {length}: this model's text encoder has {positions} positions; "
            f"give at most {positions}"
        )
    patch = model.vision.config.patch_size  # a loaded base ViT's, not the size preset's
    if image_size is not None and image_size % patch:
        raise StageError(f"iglue.image_size {image_size} is not a multiple of the ViT's patch size {patch}")
    transform = model.image_transform() if image_size is None else resize_rgb(image_size)

    def encode(texts: list[str]) -> tuple[Any, Any]:
        out = tok(texts, padding=True, truncation=True, max_length=length, return_tensors="pt")
        return out["input_ids"], out["attention_mask"]

    return EvalBindings(transform, encode)
