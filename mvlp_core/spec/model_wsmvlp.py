"""The model section of the weakly-supervised multilingual VLP family ("wsmvlp", Li et al., ACL 2023,
seed 001): a ViT image encoder, the first XLM-R layers as text encoder and the last ones as a
unified encoder whose layers have a pluggable cross-attention (see mvlp_core/model/wsmvlp).

Optimiser defaults for the pretrain section (not here): AdamW, lr 1e-4, 10% linear warm-up (24k of
240k steps), linear decay to 0, weight decay 0.2 (paper §4.1 / App. B.1.3; the released config
has 0.02), dropout 0.1, all three streams in every step.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from mvlp_core.spec.augment import AugmentSpec
from mvlp_core.spec.base import Strict


class WsmvlpDims(Strict):
    """Dimensions of a model built from configs (micro, tiny; base with `weights: random`): every
    field defaults to the size's preset in WSMVLP_SIZES."""

    hidden_size: int = Field(32, gt=0, le=4096, description="width of the ViT and of XLM-R")
    num_heads: int = Field(2, gt=0, le=128)
    intermediate_size: int = Field(64, gt=0, le=16384, description="FFN width")
    vision_layers: int = Field(1, gt=0, le=128)
    text_layers: int = Field(1, gt=0, le=128, description="XLM-R layers of the text encoder (N_L)")
    fusion_layers: int = Field(1, gt=0, le=128, description="unified encoder layers (N_C)")
    patch_size: int = Field(8, gt=0, le=64)
    vocab_size: int = Field(1000, ge=64, le=1_000_000, description="SentencePiece unigram size (a cap)")
    max_positions: int = Field(128, gt=0, le=8192, description="XLM-R position embeddings")


# `base` is the paper's (ViT-B/16 + XLM-R base, N_L = N_C = 6; its dims are the published shapes,
# used with `weights: random`); micro and tiny are random-init sizes for tests and the CPU demo.
WSMVLP_SIZES: dict[str, dict[str, Any]] = {
    "micro": {"dims": {}, "image_size": 32, "embed_dim": 16},
    "tiny": {"dims": {"hidden_size": 64, "intermediate_size": 128}, "image_size": 32, "embed_dim": 32},
    "base": {
        "dims": {
            "hidden_size": 768,
            "num_heads": 12,
            "intermediate_size": 3072,
            "vision_layers": 12,
            "text_layers": 6,
            "fusion_layers": 6,
            "patch_size": 16,
            "vocab_size": 32000,
            "max_positions": 512,
        },
        "image_size": 256,
        "embed_dim": 256,
    },
}


class MaxLen(Strict):
    """Token limits per stream, special tokens included (paper App. B.1.3)."""

    image_text: int = Field(35, ge=4, le=8192, description="English captions")
    parallel: int = Field(50, ge=4, le=8192, description="each side of a translation pair")
    mono: int = Field(64, ge=4, le=8192, description="monolingual sentences")


class StreamBatch(Strict):
    """Samples per optimizer step and stream (paper §4.1: every step has one batch of each)."""

    image: int = Field(512, ge=0, description="English image–caption pairs")
    parallel: int = Field(2048, ge=0, description="translation pairs")
    mono: int = Field(2048, ge=0, description="monolingual sentences")


class WsmvlpModelSpec(Strict):
    """wsmVLP: ViT-B/16 + XLM-R split into a text encoder and a unified encoder with pluggable
    cross-attention; L = L_UCL + L_MLM (xMLM, TLM, VLM) + L_ITM, unweighted."""

    family: Literal["wsmvlp"] = "wsmvlp"
    size: Literal["micro", "tiny", "base"] = Field(
        "base", description="a named size (WSMVLP_SIZES): base loads checkpoints; micro and tiny are random"
    )
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="base: 'random' builds the published shapes with random weights and a tokenizer"
        " trained on the given texts, capped at dims.vocab_size (throughput runs without"
        " checkpoints); micro and tiny are always random, and `checkpoint` overrides both",
    )
    checkpoint: str | None = Field(None, description="folder written by WsmvlpModel.save_pretrained")
    vision: str = Field(
        "google/vit-base-patch16-224-in21k",
        description="base: ViT-B/16 checkpoint name or path (HF ViTModel). The paper initialises the"
        " image encoder from ALBEF's ViT-B/16, which exists only inside an ALBEF checkpoint (not as"
        " an HF ViT); the ImageNet-21k ViT-B/16 is the nearest public stand-in",
    )
    text_encoder: str = Field("xlm-roberta-base", description="base: XLM-R name or path")
    text_layers: int | None = Field(
        None,
        ge=1,
        description="the first N XLM-R layers are the text encoder, the rest the unified encoder;"
        " default: half of XLM-R's layers (6 for base), dims.text_layers for the random sizes",
    )
    image_size: int | None = Field(
        None, gt=0, le=4096, description="default: the size's (base: 256, the paper's pretraining)"
    )
    max_len: MaxLen = Field(default_factory=MaxLen)
    batch: StreamBatch = Field(default_factory=StreamBatch)
    embed_dim: int | None = Field(
        None, gt=0, le=4096, description="contrastive space width; default: the size's (base: 256 as ALBEF)"
    )
    temperature: float = Field(0.07, gt=0, description="initial InfoNCE temperature (learnable)")
    temperature_range: tuple[float, float] = Field(
        (0.001, 0.5), description="the temperature is clamped to this range where it is used"
    )
    mask_prob: float = Field(0.15, gt=0, le=1, description="MLM selection rate (80/10/10)")
    freeze_vision: bool | None = Field(
        None,
        description="freeze the ViT; default: frozen for base, trainable for micro/tiny (their ViT is"
        " random). vision_proj always trains: the released config freezes it too, but there it comes"
        " trained with ALBEF's ViT, while here the ViT comes without one and vision_proj starts random",
    )
    ucl_halved: bool = Field(
        False,
        description="halve each UCL loss, (CE(a->b) + CE(b->a)) / 2, as the released code does; the "
        "paper's Eq. 1 adds the two directions' terms",
    )
    tlm_condition: Literal["clean", "masked"] = Field(
        "clean",
        description="what each side of a translation pair attends to in TLM: the other side unmasked,"
        " as Eq. 2 conditions on t^{l_j} ('clean', one more text-encoder pass unless ucl_text is"
        " clean), or the other side as masked for its own MLM, as the released code does ('masked')",
    )
    ucl_text: Literal["masked", "clean"] = Field(
        "masked",
        description="which text the contrastive and ITM losses read. The paper does not say; the"
        " released code masks the text before the text encoder and feeds that one (masked) pass to"
        " UCL, ITM and MLM ('masked'). 'clean' encodes the unmasked text once more for UCL and ITM",
    )
    augment: AugmentSpec | None = Field(
        default_factory=AugmentSpec,
        description="pretraining image augmentation (RandAugment with the released code's crop and "
        "flip); null: images only resized",
    )
    dims: WsmvlpDims | None = Field(
        None, description="dimensions that differ from the size's preset (WSMVLP_SIZES)"
    )

    def checkpoints(self) -> tuple[str, ...]:
        """The checkpoints (names or paths) building this model reads (for `mvlp plan`)."""
        if self.checkpoint:
            return (self.checkpoint,)
        if self.size == "base" and self.weights == "pretrained":
            return (self.vision, self.text_encoder)
        return ()

    def images_per_step(self, ranks: int = 1) -> int:
        """Image-caption pairs an optimizer step reads (what `pretrain.epochs` counts): the image
        batch as `ranks` (workers x grad_accum) micro-batches read it, each rounded up."""
        return math.ceil(self.batch.image / ranks) * ranks

    @property
    def random_init(self) -> bool:
        """Built from configs with random weights (every size but base with pretrained weights)."""
        return self.size != "base" or self.weights == "random"

    @model_validator(mode="after")
    def _size_defaults(self) -> WsmvlpModelSpec:
        preset = WSMVLP_SIZES[self.size]
        given = self.dims.model_dump(exclude_unset=True) if self.dims is not None else {}
        self.dims = WsmvlpDims(**{**preset["dims"], **given})
        if self.image_size is None:
            self.image_size = preset["image_size"]
        if self.embed_dim is None:
            self.embed_dim = preset["embed_dim"]
        if self.freeze_vision is None:
            self.freeze_vision = self.size == "base"
        low, high = self.temperature_range
        if not 0 < low <= high:
            raise ValueError(f"temperature_range {self.temperature_range} must satisfy 0 < low <= high")
        if self.random_init:
            if self.text_layers is None:
                self.text_layers = self.dims.text_layers
            elif self.text_layers != self.dims.text_layers:
                raise ValueError(
                    f"text_layers {self.text_layers} differs from dims.text_layers {self.dims.text_layers};"
                    " a model built from configs takes its split from dims.text_layers and dims.fusion_layers"
                )
            if self.image_size % self.dims.patch_size:
                raise ValueError(
                    f"image_size {self.image_size} is not a multiple of dims.patch_size {self.dims.patch_size}"
                )
        if self.dims.hidden_size % self.dims.num_heads:
            raise ValueError("dims.hidden_size must be a multiple of dims.num_heads")
        return self
