"""The image encoder: BLIP-2's ViT followed by its Q-Former with learnable query tokens.

`base` loads only the `vision_model.*`, `qformer.*` and `query_tokens` weights of a BLIP-2
checkpoint (Blip2Model, Blip2ForConditionalGeneration, ...) — not its multi-billion-parameter
language model — by reading the safetensors shards that hold them.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel

from mvlp_core.contract import StageError
from mvlp_core.model.parts.attention import pin_sdpa
from mvlp_core.model.parts.frozen_towers import is_frozen
from mvlp_core.model.parts.images import PixelNorm
from mvlp_core.spec import ModelSpec, RandomDims

PREFIXES = ("vision_model.", "qformer.", "query_tokens")
# BLIP-2's (CLIP's) image normalisation
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
INDEX, SINGLE = "model.safetensors.index.json", "model.safetensors"
# Blip2VisionConfig's default initializer_range is 1e-10 (BLIP-2's ViT always comes from a
# checkpoint): a tiny ViT built from it starts with all-zero weights, every image encodes alike and
# the contrastive loss never leaves chance. Tiny towers use the usual BERT/ViT std instead, and no
# Q-Former dropout (as the tiny text encoder and decoder): at this width its noise on the first
# query swamps the image signal and the image [CLS] cannot learn to tell images apart.
TINY_INIT_STD = 0.02
# the Q-Former's text-branch FFN: older checkpoints hold it, queries never use it
_TEXT_FFN = re.compile(r"^qformer\.encoder\.layer\.\d+\.(intermediate|output)\.")


class ImageEncoder(nn.Module):
    def __init__(self, vision_config: dict, qformer_config: dict, num_query_tokens: int) -> None:
        super().__init__()
        self.pixel_norm = PixelNorm(IMAGE_MEAN, IMAGE_STD)
        self.vision_model = Blip2VisionModel(Blip2VisionConfig(**vision_config))
        self.qformer = Blip2QFormerModel(Blip2QFormerConfig(**qformer_config))
        width = self.qformer.config.hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_tokens, width))
        nn.init.normal_(self.query_tokens, std=self.qformer.config.initializer_range)
        pin_sdpa(self.vision_model, self.qformer)

    @property
    def hidden_size(self) -> int:
        return self.qformer.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] uint8 pixels (or normalised floats, see PixelNorm) -> query states [N,Q,D]."""
        # a frozen ViT (nothing trainable upstream of it) needs no graph: no activations kept for it
        with torch.no_grad() if is_frozen(self.vision_model) else contextlib.nullcontext():
            image_embeds = self.vision_model(pixel_values=self.pixel_norm(pixel_values)).last_hidden_state
        # a ViT cast to bf16 (parts/frozen_towers.py) hands the Q-Former its own dtype
        image_embeds = image_embeds.to(self.query_tokens.dtype)
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        return self.qformer(
            query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask
        ).last_hidden_state


def tower_width(t: RandomDims) -> dict[str, int]:
    """The width settings every random tower shares, by the BERT-style config names."""
    return dict(
        hidden_size=t.hidden_size, intermediate_size=t.intermediate_size, num_attention_heads=t.num_heads
    )


def random_configs(spec: ModelSpec) -> tuple[dict, dict]:
    t = spec.dims
    width = tower_width(t)
    vision = dict(
        width,
        num_hidden_layers=t.vision_layers,
        image_size=spec.image_size,
        patch_size=t.patch_size,
        initializer_range=TINY_INIT_STD,
    )
    qformer = dict(
        width,
        num_hidden_layers=t.qformer_layers,
        encoder_hidden_size=t.hidden_size,
        cross_attention_frequency=1,
        vocab_size=2,
        max_position_embeddings=t.max_positions,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return vision, qformer


def _checkpoint_folder(name: str) -> Path:
    """The folder holding config.json of a BLIP-2 checkpoint: `name` itself, or for a hub name the
    snapshot the shared Hugging Face cache holds it in (fetched first unless HF_HUB_OFFLINE=1)."""
    local = Path(name)
    if not local.is_dir():
        return _download(name, "config.json").parent
    if not (local / "config.json").exists():
        raise StageError(
            f"model.vision: {name} has no config.json; expected a BLIP-2 checkpoint"
            " folder (Blip2Model/Blip2ForConditionalGeneration.save_pretrained)"
        )
    return local


def _download(name: str, filename: str, revision: str | None = None, missing_ok: bool = False) -> Path | None:
    """One file of hub repo `name` through the shared cache (HF_HOME / HF_HUB_CACHE: no private
    cache_dir, so every stage and Ray worker reuses it; with HF_HUB_OFFLINE=1 only the cache).
    None when `missing_ok` and the file is not there: the caller has another file to try."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(name, filename, revision=revision))
    except (OSError, ValueError) as err:
        if missing_ok and isinstance(err, EntryNotFoundError):
            return None
        if constants.is_offline_mode():
            raise StageError(
                f"model.vision: {filename} of {name!r} is not in the Hugging Face cache"
                f" ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids fetching it; set model.vision"
                " to a local BLIP-2 checkpoint folder or pre-populate HF_HOME on a machine with hub access"
            ) from None
        cause = next((line for line in str(err).splitlines() if line.strip()), "")
        raise StageError(
            f"cannot load the BLIP-2 checkpoint {name!r} for model.vision: {filename} could not be"
            f" fetched ({type(err).__name__}: {cause}); set model.vision to a local BLIP-2 checkpoint"
            " folder or pre-populate the Hugging Face cache (HF_HOME) on a machine with hub access"
        ) from None


def _encoder_shards(weight_map: dict[str, str]) -> list[str]:
    """The shards of a safetensors index that hold the encoder's weights: not the language model's."""
    return sorted({f for k, f in weight_map.items() if k.startswith(PREFIXES)})


def _weight_files(folder: Path, name: str) -> list[Path]:
    index = folder / INDEX
    if index.exists():
        return [folder / f for f in _encoder_shards(json.loads(index.read_text())["weight_map"])]
    single = folder / SINGLE
    if not single.exists():
        raise StageError(
            f"model.vision: {name} has no model.safetensors(.index.json); re-save it"
            " with save_pretrained (safetensors)"
        )
    return [single]


def _hub_weight_files(name: str, revision: str) -> list[Path]:
    """Fetch only what the encoder needs from hub repo `name` at `revision` (the commit its config
    came from, so every file is from one snapshot): the index and the shards it names for
    PREFIXES, never the LLM-only ones (most of BLIP-2 opt-2.7b's ~15 GB); else model.safetensors."""
    index = _download(name, INDEX, revision, missing_ok=True)
    if index is None:
        return [_download(name, SINGLE, revision)]
    shards = _encoder_shards(json.loads(index.read_text())["weight_map"])
    return [_download(name, shard, revision) for shard in shards]


def load_blip2_encoder(name: str, num_query_tokens: int) -> ImageEncoder:
    """ViT + Q-Former + query tokens from a BLIP-2 checkpoint folder or hub name."""
    from safetensors import safe_open

    folder = _checkpoint_folder(name)
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "blip-2":
        raise StageError(
            f"model.vision: {name} is a {config.get('model_type')!r} checkpoint,"
            " not BLIP-2; give a Blip2Model/Blip2ForConditionalGeneration checkpoint"
        )
    vision = Blip2VisionConfig(**config.get("vision_config", {})).to_dict()
    qformer = Blip2QFormerConfig(**config.get("qformer_config", {})).to_dict()
    saved_queries = config.get("num_query_tokens", 32)
    encoder = ImageEncoder(vision, qformer, saved_queries)
    state = {}
    local = Path(name).is_dir()
    for path in _weight_files(folder, name) if local else _hub_weight_files(name, folder.name):
        with safe_open(str(path), "pt") as f:
            state.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIXES)})
    state = {k: v for k, v in state.items() if not _TEXT_FFN.search(k)}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise StageError(
            f"model.vision: {name} does not match BLIP-2's ViT + Q-Former (missing"
            f" {missing[:5]}, unexpected {unexpected[:5]})"
        )
    if num_query_tokens != saved_queries:
        raise StageError(
            f"model.num_query_tokens is {num_query_tokens} but {name} has"
            f" {saved_queries} query tokens; set model.num_query_tokens={saved_queries}"
        )
    return encoder
