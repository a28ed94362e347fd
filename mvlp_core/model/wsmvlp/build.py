"""Building, saving and loading a wsmVLP model.

micro / tiny (and base with `weights: random`): configs from the spec's dims, random weights, a
SentencePiece unigram tokenizer trained on the given texts (captions and text shards), capped at
`dims.vocab_size`. base: the tokenizer and XLM-R weights from `text_encoder` (embeddings, the first
`text_layers` layers as text encoder, the rest as unified encoder with each cross-attention copied
from its layer's self-attention, the LM head) and the ViT from `vision`, by hub name or path.

A saved folder: config.json ({"family": "wsmvlp", "spec", "vision_config", "text_config",
"text_layers", "embed_dim", "image_mean", "image_std"}), model.safetensors, tokenizer/.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, ViTConfig, ViTModel, XLMRobertaConfig, XLMRobertaForMaskedLM

from mvlp_core.atomic import atomic_path, write_json
from mvlp_core.contract import StageError
from mvlp_core.model.parts.pretrained import from_pretrained, load_weights
from mvlp_core.model.tokenizers import _load, _train_sentencepiece
from mvlp_core.model.wsmvlp.batch import DEFAULT_MEAN, DEFAULT_STD
from mvlp_core.model.wsmvlp.model import WsmvlpModel
from mvlp_core.spec.model_wsmvlp import WsmvlpModelSpec

FAMILY = "wsmvlp"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
XLMR_VOCAB = 250002  # xlm-roberta-base's embedding rows: the published shape of base + random


def _json(config) -> dict:
    return json.loads(config.to_json_string(use_diff=False))


def _configs(spec: WsmvlpModelSpec, tokenizer) -> tuple[dict, dict]:
    """ViT and XLM-R configs of a model built from the spec's dims (base: the published shapes,
    dropout 0.1 as the paper; micro/tiny: no dropout)."""
    d = spec.dims
    base = spec.size == "base"
    dropout = 0.1 if base else 0.0
    # BERT's std 0.02 is for width 768; at width 32 it leaves every sub-layer's output ~5x below
    # the embeddings it is added to, and the [CLS] state hardly varies across texts (the
    # contrastive and ITM losses then sit at chance for hundreds of steps). Keep the base scale.
    std = 0.02 * (768 / d.hidden_size) ** 0.5 if not base else 0.02
    width = dict(
        hidden_size=d.hidden_size,
        num_attention_heads=d.num_heads,
        intermediate_size=d.intermediate_size,
        initializer_range=std,
    )
    vision = ViTConfig(
        **width,
        num_hidden_layers=d.vision_layers,
        image_size=spec.image_size,
        patch_size=d.patch_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    text = XLMRobertaConfig(
        **width,
        vocab_size=max(XLMR_VOCAB, len(tokenizer)) if base else len(tokenizer),
        num_hidden_layers=d.text_layers + d.fusion_layers,
        max_position_embeddings=d.max_positions + 2,  # XLM-R's positions start after the pad id
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return _json(vision), _json(text)


def _image_stats(name: str) -> tuple[list[float], list[float]]:
    """The ViT checkpoint's normalisation (its image processor's mean/std), 0.5/0.5 if it has none."""
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(name)
        return list(processor.image_mean), list(processor.image_std)
    except (OSError, ValueError, ImportError, AttributeError, TypeError):
        return list(DEFAULT_MEAN), list(DEFAULT_STD)


def _config(spec, vision: dict, text: dict, text_layers: int, mean, std) -> dict:
    return {
        "family": FAMILY,
        "spec": spec.model_dump(mode="json"),
        "vision_config": vision,
        "text_config": text,
        "text_layers": text_layers,
        "embed_dim": spec.embed_dim,
        "image_mean": list(mean),
        "image_std": list(std),
    }


def _pretrained(spec: WsmvlpModelSpec) -> WsmvlpModel:
    tokenizer = _load(spec.text_encoder, "text encoder", "text_encoder")
    xlmr = from_pretrained(XLMRobertaForMaskedLM, spec.text_encoder, "text_encoder")
    vit = from_pretrained(ViTModel, spec.vision, "vision", add_pooling_layer=False)
    n_layers = xlmr.config.num_hidden_layers
    text_layers = spec.text_layers if spec.text_layers is not None else n_layers // 2
    if not 0 < text_layers < n_layers:
        raise StageError(
            f"model.text_layers {text_layers} must leave at least one of {spec.text_encoder}'s"
            f" {n_layers} layers for the unified encoder; set it below {n_layers}"
        )
    mean, std = _image_stats(spec.vision)
    config = _config(spec, _json(vit.config), _json(xlmr.config), text_layers, mean, std)
    model = WsmvlpModel(config, tokenizer)
    model.vision.load_state_dict(vit.state_dict())
    model.embeddings.load_state_dict(xlmr.roberta.embeddings.state_dict())
    layers = xlmr.roberta.encoder.layer
    for i, layer in enumerate([*model.text_layers, *model.fusion_layers]):
        layer.load_hf_layer(layers[i].state_dict())
    model.lm_head.load_hf_head(xlmr.lm_head.state_dict())
    return model


def build(
    spec: WsmvlpModelSpec, texts: Iterable[str] | None = None, out_dir: str | Path | None = None
) -> WsmvlpModel:
    """The model the spec names (see the module docstring); saved to `out_dir` when given.
    `texts` train the tokenizer of the random-init sizes; `spec.checkpoint` loads that folder."""
    if spec.checkpoint:
        model = load(spec.checkpoint)
    elif spec.random_init:
        texts = [t for t in (texts or []) if t and t.strip()]
        if not texts:
            raise StageError(
                "a random-init wsmvlp model trains its tokenizer: pass the captions and text shards"
            )
        tokenizer = _train_sentencepiece(texts, spec.dims.vocab_size)
        vision, text = _configs(spec, tokenizer)
        model = WsmvlpModel(
            _config(spec, vision, text, spec.dims.text_layers, DEFAULT_MEAN, DEFAULT_STD), tokenizer
        )
    else:
        model = _pretrained(spec)
    if out_dir is not None:
        save(model, out_dir)
    return model


def save(model: WsmvlpModel, folder: str | Path) -> None:
    """Write `model` to `folder` (config.json, model.safetensors, tokenizer/)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_model(model, str(tmp))
    write_json(folder / CONFIG_FILE, model.config)


def load(folder: str | Path) -> WsmvlpModel:
    """The model (with its tokenizer) from a folder written by `save` / `save_pretrained`."""

    folder = Path(folder)
    path = folder / CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if config.get("family") != FAMILY:
        raise StageError(
            f'{folder} is not a wsmvlp checkpoint (no {CONFIG_FILE} with "family": "wsmvlp"); give a'
            " folder written by WsmvlpModel.save_pretrained"
        )
    model = WsmvlpModel(config, AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR)))
    load_weights(model, folder / WEIGHTS_FILE)
    return model
