"""The model section: the family's architecture, its sizes and its loss weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mvlp_core.spec.base import Strict


class RandomDims(Strict):
    """Dimensions of a model built with random weights (sizes micro, tiny, small): every field
    defaults to the size's preset in SIZES."""

    hidden_size: int = Field(
        128, gt=0, le=4096, description="width of every tower (ViT, Q-Former, XLM-R, GPT-2)"
    )
    num_heads: int = Field(4, gt=0, le=128)
    intermediate_size: int = Field(512, gt=0, le=16384)
    patch_size: int = Field(8, gt=0, le=64)
    vision_layers: int = Field(2, gt=0, le=128)
    qformer_layers: int = Field(2, gt=0, le=128)
    text_layers: int = Field(2, gt=0, le=128)
    decoder_layers: int = Field(2, gt=0, le=128)
    encoder_vocab_size: int = Field(
        1000, ge=64, le=1_000_000, description="SentencePiece unigram size (a cap)"
    )
    decoder_vocab_size: int = Field(
        1000, ge=300, le=1_000_000, description="byte-level BPE size (256 bytes + merges)"
    )
    embed_dim: int = Field(64, gt=0, le=4096, description="contrastive space width")
    max_positions: int = Field(256, gt=0, le=8192, description="position embeddings of XLM-R and GPT-2")


# The named sizes, defined once: `base` is the paper's (checkpoints by name or path); the others are
# built from configs with random weights. Each preset gives the dimensions that differ from
# RandomDims' defaults, and the image size and query tokens that go with them.
SIZES: dict[str, dict[str, Any]] = {
    # tests: the smallest model that still trains every objective (a few seconds per step on a CPU)
    "micro": {
        "dims": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "vision_layers": 1,
            "qformer_layers": 1,
            "text_layers": 1,
            "decoder_layers": 1,
        },
        "image_size": 32,
        "num_query_tokens": 4,
    },
    # the demo and the CPU benchmarks: learns the synthetic world on 2 cores in minutes
    "tiny": {
        "dims": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "vision_layers": 1,
            "qformer_layers": 1,
            "text_layers": 1,
            "decoder_layers": 2,
        },
        "image_size": 32,
        "num_query_tokens": 8,
    },
    # RandomDims' defaults (~2-3M parameters)
    "small": {"dims": {}, "image_size": 64, "num_query_tokens": 32},
    # BLIP-2 ViT + Q-Former, XLM-R base, GPT-2 (seed 002 §4: BLIP-2 with CLIP ViT-L/14; `vision`
    # loads blip2-opt-2.7b's ViT-g/14, a public HF checkpoint: data_specs/pipelines/unigen-cc3m.yaml)
    "base": {"dims": {}, "image_size": 224, "num_query_tokens": 32},
}


class ModelSpec(Strict):
    """UniGen: BLIP-2 ViT + Q-Former, XLM-R encoder, GPT-2 decoder (see mvlp_core/model/unigen)."""

    family: Literal["unigen"] = Field("unigen", description="the model family (mvlp_core/model/families.py)")
    size: Literal["micro", "tiny", "small", "base"] = Field(
        "base", description="a named size (SIZES): base loads checkpoints; micro, tiny, small are random"
    )
    checkpoint: str | None = Field(None, description="folder written by UniGen.save_pretrained")
    vision: str = Field(
        "Salesforce/blip2-opt-2.7b",
        description="base: BLIP-2 checkpoint name or path holding the ViT + Q-Former",
    )
    text_encoder: str = Field("xlm-roberta-base", description="base: XLM-R name or path")
    decoder: str = Field("gpt2", description="base: GPT-2 name or path")
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="base: 'random' builds the published shapes with random weights and tokenizers"
        " trained on the shards, capped at dims.encoder_vocab_size / dims.decoder_vocab_size"
        " (throughput and MFU runs where no checkpoint is at hand); the other sizes are always"
        " random, and `checkpoint` overrides both",
    )
    num_query_tokens: int | None = Field(
        None, gt=0, le=1024, description="Q-Former queries; default: the size's"
    )
    image_size: int | None = Field(None, gt=0, le=4096, description="default: the size's (base: 224)")
    max_text_len: int = Field(
        40, ge=4, le=8192, description="encoder tokens (source, caption); the paper's 40 for XLM-R"
    )
    max_target_len: int = Field(32, ge=2, le=8192, description="decoder target tokens, eos included")
    freeze: list[Literal["vision", "qformer", "text_encoder", "decoder", "decoder.middle"]] | None = Field(
        None,
        description="frozen parts; default: the paper's ['vision', 'decoder.middle'] for base,"
        " ['decoder.middle'] for the random sizes (their ViT is random, so it has to learn)",
    )
    decoder_middle_layers: int | None = Field(
        None, ge=0, description="decoder.middle size; default: 6 for base (paper), a third otherwise"
    )
    alpha_qus: float = Field(1.0, ge=0, description="weight of L_qus")
    beta_match: float = Field(1.0, ge=0, description="weight of L_match")
    gamma_itc: float = Field(
        1.0,
        ge=0,
        description="weight of the contrastive loss (UniGen: 1)",
    )
    delta_xlc: float = Field(
        0.0,
        ge=0,
        description="weight of the cross-lingual consistency loss (not in UniGen): a "
        "parallel pair's source side, read as a [qus] or [match] prompt over an image of the batch, "
        "must give the decoder's next-token distribution its English side gives",
    )
    epsilon_sent: float = Field(
        0.0,
        ge=0,
        description="weight of the sentence alignment loss (not in UniGen): a parallel "
        "pair's source side, its XLM-R states averaged, is pulled to its English side's average (MSE, "
        "English side held fixed), as multilingual sentence encoders are distilled",
    )
    max_images: int = Field(
        2, ge=1, description="images per example (MaRVL: 2), each with a position embedding"
    )
    embed_dim: int = Field(256, gt=0, le=4096, description="base: contrastive space width")
    temperature: float = Field(0.07, gt=0, description="initial InfoNCE temperature (learnable)")
    temperature_range: tuple[float, float] = (0.001, 0.5)
    hard_negatives: bool = Field(True, description="[match] negatives mined from similarities")
    itc_text: Literal["cls", "mean"] = Field(
        "cls",
        description="the text's contrastive feature: its first token's state (XLM-R's <s>; the paper's"
        " similarity is between two tokens, the image's being the first query), or its token states"
        " averaged (a randomly initialised encoder's first token barely varies)",
    )
    dims: RandomDims | None = Field(
        None, description="random sizes: dimensions that differ from the size's preset (SIZES)"
    )

    def checkpoints(self) -> tuple[str, ...]:
        """The checkpoints (names or paths) building this model reads."""
        if self.checkpoint:
            return (self.checkpoint,)
        if self.size == "base" and self.weights == "pretrained":
            return (self.vision, self.text_encoder, self.decoder)
        return ()

    @property
    def random_init(self) -> bool:
        """Built from configs with random weights (every size but base with pretrained weights)."""
        return self.size != "base" or self.weights == "random"

    @model_validator(mode="after")
    def _size_defaults(self) -> ModelSpec:
        preset = SIZES[self.size]
        given = self.dims.model_dump(exclude_unset=True) if self.dims is not None else {}
        self.dims = RandomDims(**{**preset["dims"], **given})
        if self.image_size is None:
            self.image_size = preset["image_size"]
        if self.num_query_tokens is None:
            self.num_query_tokens = preset["num_query_tokens"]
        if self.freeze is None:
            self.freeze = ["vision", "decoder.middle"] if self.size == "base" else ["decoder.middle"]
        if self.size != "base" and self.image_size % self.dims.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of dims.patch_size {self.dims.patch_size}"
            )
        if self.dims.hidden_size % self.dims.num_heads:
            raise ValueError("dims.hidden_size must be a multiple of dims.num_heads")
        return self
