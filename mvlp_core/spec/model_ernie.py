"""The model section of the ERNIE-UniX² family ("ernie", Shan et al., 2022, seed 000): a ViT and a
text encoder (the dual encoder), a cross-lingual cross-modal encoder over [MM_CLS] + text states +
image patches, and a decoder with cross-attention; eight tasks, one drawn uniformly per micro-step
(see mvlp_core/model/ernie).

The shape built is the paper's comparable-size variant (§4.3.2, Table 3 "†"): the text encoder and
the cross-modal encoder are XLM-R's first and last layers; the decoder's layers start from XLM-R's
last layers with their cross-attention copied from the self-attention. The paper's headline model
starts its encoder–decoder from mBART instead, which this family does not load.

Optimiser defaults for the pretrain section (data_specs/pipelines/ernie-unix2.yaml, not here): Adam
lr 1e-4, 4k warm-up steps, cosine decay to 1e-6, weight decay 0.1, β (0.9, 0.999), 60k steps of
4,096 samples (§4.3.1, Table 5).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from mvlp_core.spec.base import Strict

ErnieTask = Literal["cmcl", "clcl", "itm", "mlm", "plm", "vplm", "mt", "mmmt"]
TASKS: tuple[str, ...] = ("cmcl", "clcl", "itm", "mlm", "plm", "vplm", "mt", "mmmt")
# The decoder is told the language to write through a learned embedding per language (mBART's
# language codes do this in the paper's model); row 0 is every language not listed. Default: the
# languages of IGLUE's five tasks and of the paper's translated CC3M captions.
LANGUAGES: tuple[str, ...] = (
    "en", "ar", "bg", "bn", "cs", "da", "de", "el", "es", "et", "fr", "id",
    "ja", "ko", "pt", "ru", "sw", "ta", "tr", "vi", "zh",
)  # fmt: skip


class ErnieDims(Strict):
    """Dimensions of a model built from configs (micro, tiny; base with `weights: random`): every
    field defaults to the size's preset in ERNIE_SIZES."""

    hidden_size: int = Field(32, gt=0, le=4096, description="width of the ViT, the encoders and the decoder")
    num_heads: int = Field(2, gt=0, le=128)
    intermediate_size: int = Field(64, gt=0, le=16384, description="FFN width")
    vision_layers: int = Field(1, gt=0, le=128)
    text_layers: int = Field(1, gt=0, le=128, description="layers of the text encoder (dual encoder)")
    fusion_layers: int = Field(1, gt=0, le=128, description="layers of the cross-lingual cross-modal encoder")
    decoder_layers: int = Field(1, gt=0, le=128)
    patch_size: int = Field(8, gt=0, le=64)
    vocab_size: int = Field(1000, ge=64, le=1_000_000, description="SentencePiece unigram size (a cap)")
    max_positions: int = Field(128, gt=0, le=8192, description="text position embeddings")


# base: ViT-B/16 + XLM-R base split 6 + 6, a 6-layer decoder (the † variant; the decoder's depth is
# not in the paper); micro and tiny are random-init sizes for tests and the CPU demo
ERNIE_SIZES: dict[str, dict[str, Any]] = {
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
            "decoder_layers": 6,
            "patch_size": 16,
            "vocab_size": 32000,
            "max_positions": 512,
        },
        "image_size": 224,
        "embed_dim": 256,
    },
}


class ErnieMaxLen(Strict):
    """Token limits, special tokens included (not in the paper)."""

    image_text: int = Field(40, ge=4, le=8192, description="captions")
    parallel: int = Field(64, ge=4, le=8192, description="each side of a translation pair")
    mono: int = Field(64, ge=4, le=8192, description="monolingual sentences")


class ErnieModelSpec(Strict):
    """ERNIE-UniX²: dual encoder (CMCL, CLCL), cross-modal encoder (ITM, MLM) and encoder–decoder
    (PLM, vPLM, MT, mMMT), one task per micro-step drawn uniformly, gradients merged."""

    family: Literal["ernie"] = "ernie"
    size: Literal["micro", "tiny", "base"] = Field(
        "base", description="a named size (ERNIE_SIZES): base loads checkpoints; micro and tiny are random"
    )
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="base: 'random' builds the published shapes with random weights and a tokenizer"
        " trained on the given texts (throughput runs without checkpoints); micro and tiny are always"
        " random, and `checkpoint` overrides both",
    )
    checkpoint: str | None = Field(None, description="folder written by ErnieModel.save_pretrained")
    vision: str = Field(
        "google/vit-base-patch16-224-in21k", description="base: ViT-base checkpoint name or path (§4.3.1)"
    )
    text_encoder: str = Field(
        "xlm-roberta-base",
        description="base: XLM-R name or path: its first `text_layers` layers are the text encoder, the"
        " rest the cross-modal encoder (Table 3's comparable-size variant), and its last"
        " `dims.decoder_layers` layers start the decoder",
    )
    text_layers: int | None = Field(
        None, ge=1, description="base: XLM-R layers of the text encoder; default half of them (6)"
    )
    image_size: int | None = Field(None, gt=0, le=4096, description="default: the size's (base: 224)")
    max_len: ErnieMaxLen = Field(default_factory=ErnieMaxLen)
    batch: int = Field(
        4096,
        ge=1,
        description="samples per optimizer step over all workers (Table 5); a micro-step"
        " holds batch / (workers x grad_accum) samples of its one task",
    )
    tasks: list[ErnieTask] = Field(
        list(TASKS),
        min_length=1,
        description="the tasks drawn, each with equal probability every micro-step (§3.2); MLM draws"
        " from image-text pairs and monolingual text alike (Table 6), half each",
    )
    embed_dim: int | None = Field(
        None,
        gt=0,
        le=4096,
        description="contrastive space width: the [CLS] states are projected to it before they are"
        " normalised (the paper names no projection; one is needed where the ViT's and the text's widths"
        " differ); default: the size's (base: 256, as ALBEF)",
    )
    temperature: float = Field(
        0.07, gt=0, description="initial temperature of CMCL and CLCL (one, learnable)"
    )
    temperature_range: tuple[float, float] = Field(
        (0.001, 0.5), description="the temperature is clamped to this range where it is used"
    )
    mask_prob: float = Field(
        0.15, gt=0, le=1, description="MLM selection rate, 80/10/10 (not in the paper: BERT's)"
    )
    prefix_ratio: float = Field(
        0.2, gt=0, lt=1, description="PLM/vPLM: the prefix is this share of the tokens (§3.2.3: 20%)"
    )
    prefix_zero_prob: float = Field(
        0.5, ge=0, le=1, description="PLM/vPLM: probability that the prefix is empty (§3.2.3: ½)"
    )
    mmmt_mask_prob: float = Field(
        0.15,
        gt=0,
        le=1,
        description="mMMT: share of source tokens replaced by [MASK] and predicted (rate not in the paper)",
    )
    itm_negatives: Literal["random", "hard"] = Field(
        "random",
        description="ITM negatives, one text per image and one image per text from the batch: drawn"
        " uniformly (the paper replaces the image or the text and names no mining), or ∝ softmax of"
        " the contrastive similarities (ALBEF's hard negatives)",
    )
    languages: list[str] = Field(
        list(LANGUAGES),
        min_length=1,
        description="languages the decoder is told to write, one learned embedding each; others"
        " share one more",
    )
    dims: ErnieDims | None = Field(
        None, description="dimensions that differ from the size's preset (ERNIE_SIZES)"
    )

    def checkpoints(self) -> tuple[str, ...]:
        """The checkpoints (names or paths) building this model reads (for `mvlp plan`)."""
        if self.checkpoint:
            return (self.checkpoint,)
        if self.size == "base" and self.weights == "pretrained":
            return (self.vision, self.text_encoder)
        return ()

    def images_per_step(self, ranks: int = 1) -> int:
        """Image-text samples an optimizer step reads on average (what `pretrain.epochs` counts):
        the batch as `ranks` (workers x grad_accum) micro-batches read it (each rounded up), times
        the image tasks' share of the draws (MLM's half on image-text included)."""
        batch = math.ceil(self.batch / ranks) * ranks
        image = sum({"cmcl": 1, "itm": 1, "vplm": 1, "mmmt": 1, "mlm": 0.5}.get(t, 0) for t in self.tasks)
        return max(1, round(batch * image / len(self.tasks)))

    @property
    def random_init(self) -> bool:
        """Built from configs with random weights (every size but base with pretrained weights)."""
        return self.size != "base" or self.weights == "random"

    @model_validator(mode="after")
    def _size_defaults(self) -> ErnieModelSpec:
        preset = ERNIE_SIZES[self.size]
        given = self.dims.model_dump(exclude_unset=True) if self.dims is not None else {}
        self.dims = ErnieDims(**{**preset["dims"], **given})
        if self.image_size is None:
            self.image_size = preset["image_size"]
        if self.embed_dim is None:
            self.embed_dim = preset["embed_dim"]
        low, high = self.temperature_range
        if not 0 < low <= high:
            raise ValueError(f"temperature_range {self.temperature_range} must satisfy 0 < low <= high")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks {self.tasks} names a task twice")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages {self.languages} names a language twice")
        if self.random_init:
            if self.text_layers is None:
                self.text_layers = self.dims.text_layers
            elif self.text_layers != self.dims.text_layers:
                raise ValueError(
                    f"text_layers {self.text_layers} differs from dims.text_layers {self.dims.text_layers};"
                    " a model built from configs takes its split from dims"
                )
            if self.image_size % self.dims.patch_size:
                raise ValueError(
                    f"image_size {self.image_size} is not a multiple of dims.patch_size {self.dims.patch_size}"
                )
        if self.dims.hidden_size % self.dims.num_heads:
            raise ValueError("dims.hidden_size must be a multiple of dims.num_heads")
        return self
