"""Building, saving and loading an ERNIE-UniX² model.

micro / tiny (and base with `weights: random`): configs from the spec's dims, random weights, a
SentencePiece unigram tokenizer trained on the given texts (captions and text shards), capped at
`dims.vocab_size`. base: the tokenizer and XLM-R weights from `text_encoder` (embeddings; the first
`text_layers` layers as the text encoder, the rest as the cross-modal encoder; the last
`dims.decoder_layers` layers again as the decoder, each cross-attention copied from its layer's
self-attention; the LM head for both MLM and generation) and the ViT from `vision`, by hub name or
path.

A saved folder: config.json ({"family": "ernie", "spec", "vision_config", "text_config",
"text_layers", "decoder_layers", "embed_dim", "image_mean", "image_std"}), model.safetensors,
tokenizer/.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from transformers import ViTModel, XLMRobertaForMaskedLM

from mvlp_core.contract import StageError
from mvlp_core.model.ernie.model import ErnieModel
from mvlp_core.model.parts import vit_xlmr
from mvlp_core.model.parts.pretrained import from_pretrained
from mvlp_core.model.parts.vit_xlmr import DEFAULT_MEAN, DEFAULT_STD, hf_json, image_stats
from mvlp_core.model.tokenizers import _load, _train_sentencepiece
from mvlp_core.spec.model_ernie import ErnieModelSpec

FAMILY = "ernie"


def _configs(spec: ErnieModelSpec, tokenizer) -> tuple[dict, dict]:
    """ViT and XLM-R configs from the spec's dims (base: dropout 0.1; micro/tiny: none); the
    decoder's layers are XLM-R layers of the same config."""
    return vit_xlmr.configs(spec.dims, spec.size == "base", spec.image_size, tokenizer)


def _config(spec, vision: dict, text: dict, text_layers: int, mean, std) -> dict:
    return {
        "family": FAMILY,
        "spec": spec.model_dump(mode="json"),
        "vision_config": vision,
        "text_config": text,
        "text_layers": text_layers,
        "decoder_layers": spec.dims.decoder_layers,
        "embed_dim": spec.embed_dim,
        "image_mean": list(mean),
        "image_std": list(std),
    }


def _pretrained(spec: ErnieModelSpec) -> ErnieModel:
    tokenizer = _load(spec.text_encoder, "text encoder", "text_encoder")
    xlmr = from_pretrained(XLMRobertaForMaskedLM, spec.text_encoder, "text_encoder")
    vit = from_pretrained(ViTModel, spec.vision, "vision", add_pooling_layer=False)
    n_layers = xlmr.config.num_hidden_layers
    text_layers = spec.text_layers if spec.text_layers is not None else n_layers // 2
    if not 0 < text_layers < n_layers:
        raise StageError(
            f"model.text_layers {text_layers} must leave at least one of {spec.text_encoder}'s"
            f" {n_layers} layers for the cross-modal encoder; set it below {n_layers}"
        )
    if spec.dims.decoder_layers > n_layers:
        raise StageError(
            f"model.dims.decoder_layers {spec.dims.decoder_layers}: the decoder starts from"
            f" {spec.text_encoder}'s last layers and it has {n_layers}; give at most {n_layers}"
        )
    mean, std = image_stats(spec.vision)
    config = _config(spec, hf_json(vit.config), hf_json(xlmr.config), text_layers, mean, std)
    model = ErnieModel(config, tokenizer)
    model.vision.load_state_dict(vit.state_dict())
    model.embeddings.load_state_dict(xlmr.roberta.embeddings.state_dict())
    layers = xlmr.roberta.encoder.layer
    for i, layer in enumerate([*model.text_layers, *model.fusion_layers]):
        layer.load_hf_layer(layers[i].state_dict())
    for layer, source in zip(model.decoder_layers, layers[n_layers - len(model.decoder_layers) :]):
        layer.load_hf_layer(source.state_dict())
    model.mlm_head.load_hf_head(xlmr.lm_head.state_dict())
    model.lm_head.load_hf_head(xlmr.lm_head.state_dict())
    return model


def build(
    spec: ErnieModelSpec, texts: Iterable[str] | None = None, out_dir: str | Path | None = None
) -> ErnieModel:
    """The model the spec names (see the module docstring); saved to `out_dir` when given.
    `texts` train the tokenizer of the random-init sizes; `spec.checkpoint` loads that folder."""
    if spec.checkpoint:
        model = load(spec.checkpoint)
    elif spec.random_init:
        texts = [t for t in (texts or []) if t and t.strip()]
        if not texts:
            raise StageError(
                "a random-init ernie model trains its tokenizer: pass the captions and text shards"
            )
        tokenizer = _train_sentencepiece(texts, spec.dims.vocab_size)
        vision, text = _configs(spec, tokenizer)
        model = ErnieModel(
            _config(spec, vision, text, spec.dims.text_layers, DEFAULT_MEAN, DEFAULT_STD), tokenizer
        )
    else:
        model = _pretrained(spec)
    if out_dir is not None:
        save(model, out_dir)
    return model


def save(model: ErnieModel, folder: str | Path) -> None:
    """Write `model` to `folder` (config.json, model.safetensors, tokenizer/)."""
    vit_xlmr.save(model, folder)


def load(folder: str | Path) -> ErnieModel:
    """The model (with its tokenizer) from a folder written by `save` / `save_pretrained`."""
    return vit_xlmr.load(folder, FAMILY, ErnieModel)
