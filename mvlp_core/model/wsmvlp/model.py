"""wsmVLP (Li et al., ACL 2023; seed 001): weakly-supervised multilingual VLP from English
image–caption pairs, translation pairs and monolingual text, with no multilingual image–text pairs.

Towers: a ViT (its [CLS] through `vision_proj` is the image feature); XLM-R's embeddings and first
`text_layers` layers are the text encoder (its [CLS] through the one `text_proj` every text shares
is the text feature); XLM-R's remaining layers, each with a pluggable cross-attention
(`FusionLayer`), are the unified encoder, whose output feeds the tied MLM head and the ITM head.
Three routines (paper Fig. 5): a caption attends to the image's patch states, each side of a
translation pair to the other side's uni-modal states (both directions), a monolingual sentence
skips the cross-attention.

Losses (L = their sum, unweighted, §4.1), each returned on its own:
    loss_ucl_image  InfoNCE image ↔ caption        ½[CE(S/τ, I) + CE(Sᵀ/τ, I)], S cosine of the
    loss_ucl_text   InfoNCE sentence ↔ translation  uni-modal [CLS] features, one text_proj, one τ
    loss_vlm        MLM of the caption conditioned on the image
    loss_tlm        MLM of each side of a pair conditioned on the other (sum of both directions,
                    as the released code's s2t + t2s)
    loss_xmlm       MLM of monolingual text, no cross-attention
    loss_itm        image–text matching on the fused [CLS]: B positives, per image one hard text and
                    per text one hard image drawn ∝ softmax of the contrastive logits (ALBEF)
A stream absent from the batch contributes nothing, and the parameters only it uses get no
gradient (the ranks' gradient averaging counts them as zeros: mvlp_core/train/grad_sync.py); the
contrastive losses gather across ranks, so every rank must hold the same streams at the same step.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig, ViTModel, XLMRobertaConfig
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings

from mvlp_core.model.losses import contrastive_loss, mine_hard_negatives
from mvlp_core.model.parts import host_index
from mvlp_core.model.parts.attention import pin_sdpa
from mvlp_core.model.parts.bert_layers import FusionLayer, MLMHead
from mvlp_core.model.parts.dual_scoring import DualEncoderScoring
from mvlp_core.model.parts.frozen_towers import FrozenTowersStayInEval, is_frozen
from mvlp_core.model.parts.images import PixelNorm
from mvlp_core.model.parts.masking import IGNORE
from mvlp_core.model.wsmvlp.flops import WsmvlpFlops
from mvlp_core.spec.model_wsmvlp import WsmvlpModelSpec


def itm_negatives(
    logits: torch.Tensor, positive: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM negative pairs from the in-batch contrastive logits [B, B] (image rows, text columns):
    for each image a text drawn ∝ softmax(its row), for each text an image drawn ∝ softmax(its
    column), never a positive (`positive[i, j]`: the diagonal and identical captions).
    Returns (image index, text index) of the image→text negatives followed by the text→image ones."""
    img_a, txt_a, img_b, txt_b = mine_hard_negatives(logits, positive, generator)
    return torch.cat([img_a, img_b]), torch.cat([txt_a, txt_b])


def _mlm_loss(logits: torch.Tensor, targets: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    if targets.numel() == 0:
        return anchor.sum() * 0.0
    return F.cross_entropy(logits, targets)


class WsmvlpModel(DualEncoderScoring, FrozenTowersStayInEval, nn.Module):
    """The model. `config` holds the spec, the ViT and XLM-R configs and the layer split, so
    `from_pretrained` rebuilds it without the hub. `generator` (None: the global RNG) draws the ITM
    hard negatives."""

    HEAD_PARAMS: tuple[str, ...] = ()

    def __init__(self, config: dict, tokenizer) -> None:
        super().__init__()
        self.config = config
        self.spec = WsmvlpModelSpec.model_validate(config["spec"])
        self.pixel_norm = PixelNorm(config["image_mean"], config["image_std"])
        self.tokenizer = tokenizer
        self.generator: torch.Generator | None = None
        vision_config = ViTConfig(**config["vision_config"])
        text_config = XLMRobertaConfig(**config["text_config"])
        width = text_config.hidden_size
        if vision_config.hidden_size != width:
            raise ValueError(
                f"ViT width {vision_config.hidden_size} != XLM-R width {width}: the same cross-attention"
                " reads image patches (VLM) and the other sentence's states (TLM), so they must match"
            )
        n_text = config["text_layers"]
        if not 0 < n_text < text_config.num_hidden_layers:
            raise ValueError(
                f"text_layers {n_text} leaves no unified layer of XLM-R's {text_config.num_hidden_layers}"
            )
        self.vision = ViTModel(vision_config, add_pooling_layer=False)
        pin_sdpa(self.vision)
        self.embeddings = XLMRobertaEmbeddings(text_config)
        self.text_layers = nn.ModuleList(FusionLayer(text_config) for _ in range(n_text))
        self.fusion_layers = nn.ModuleList(
            FusionLayer(text_config, cross_attention=True, kv_width=vision_config.hidden_size)
            for _ in range(text_config.num_hidden_layers - n_text)
        )
        self.lm_head = MLMHead(text_config, self.embeddings.word_embeddings)
        embed_dim = config["embed_dim"]
        self.vision_proj = nn.Linear(vision_config.hidden_size, embed_dim)
        self.text_proj = nn.Linear(width, embed_dim)
        self.itm_head = nn.Linear(width, 2)
        self.temp = nn.Parameter(torch.tensor(float(self.spec.temperature)))
        self._init_text(text_config.initializer_range)
        if self.spec.freeze_vision:  # the ViT only: vision_proj is never loaded with it (spec)
            for p in self.vision.parameters():
                p.requires_grad_(False)

    def _init_text(self, std: float) -> None:
        """BERT's init for everything but the ViT (which HF initialises): normal(0, std) weights,
        zero biases, unit LayerNorms; each cross-attention starts as its layer's self-attention."""
        for module in [self.embeddings, self.text_layers, self.fusion_layers, self.lm_head, self.text_proj]:
            for m in module.modules():
                if isinstance(m, nn.Linear | nn.Embedding):
                    nn.init.normal_(m.weight, std=std)
                    if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                        nn.init.zeros_(m.weight[m.padding_idx])
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
                if isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        for m in (self.vision_proj, self.itm_head):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
        for layer in self.fusion_layers:
            layer.init_cross_from_self()

    # ---------------------------------------------------------------- towers
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch states [B, 1+P, D] ([CLS] first) of uint8 images [B, 3, S, S] (or normalised floats)."""
        pixels = self.pixel_norm(pixel_values)
        states = self.vision(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        # a ViT cast to bf16 (parts/frozen_towers.py) hands the rest its dtype
        return states.to(self.vision_proj.weight.dtype)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Uni-modal text states [B, L, D]: embeddings + the text encoder's layers."""
        hidden = self.embeddings(input_ids=ids)
        for layer in self.text_layers:
            hidden = layer(hidden, mask)
        return hidden

    def unify(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The unified encoder over text states; `memory` None skips every cross-attention."""
        if memory is not None and memory_mask is None:
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.long, device=memory.device)
        for layer in self.fusion_layers:
            states = layer(states, mask, memory, memory_mask)
        return states

    def towers(self) -> list[nn.Module]:
        """What `pretrain.compile` compiles: the ViT and each encoder layer (one graph serves every
        layer of a kind; the loops over layers and the streams' masking stay eager)."""
        return [self.vision, *self.text_layers, *self.fusion_layers]

    def frozen_towers(self) -> list[nn.Module]:
        """The ViT when frozen (`freeze_vision`): nothing trainable upstream of it."""
        return [self.vision] if is_frozen(self.vision) else []

    def cross_attention_modules(self) -> list[nn.Module]:
        """The unified encoder's cross-attention blocks, in layer order."""
        return [layer.crossattention for layer in self.fusion_layers]

    def _image_feature(self, image_states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(image_states[:, 0]), dim=-1)

    def _text_feature(self, text_states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text_states[:, 0]), dim=-1)

    def _temperature(self) -> torch.Tensor:
        return self.temp.clamp(*self.spec.temperature_range)

    def _ucl(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Eq. 1 for one stream: InfoNCE a->b plus b->a (halved with `ucl_halved`)."""
        both = contrastive_loss(a, b, self._temperature())  # the two directions' mean
        return both if self.spec.ucl_halved else 2 * both

    def _mlm(self, fused: torch.Tensor, b: dict, suffix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits [N, V]) at the N labelled positions of `b["labels" + suffix]` only (`fused`
        holds its rows), found through collate's flat index where it still fits the labels."""
        labels = b[f"labels{suffix}"]
        at = host_index.fitting(b.get(f"labels_at{suffix}"), b.get(f"labels_of{suffix}"), labels != IGNORE)
        logits = self.lm_head(fused.flatten(0, 1).index_select(0, at)).float()
        return _mlm_loss(logits, labels.flatten().index_select(0, at), fused), logits

    # ---------------------------------------------------------------- the three routines
    def _image_stream(self, b: dict, out: dict, logits: dict) -> None:
        image = self.encode_image(b["pixel_values"])
        mask = b["mask"]
        masked = self.encode_text(b["masked_ids"], mask)
        clean = masked if self.spec.ucl_text == "masked" else self.encode_text(b["ids"], mask)
        image_feat, text_feat = self._image_feature(image), self._text_feature(clean)
        temperature = self._temperature()
        out["loss_ucl_image"] = self._ucl(image_feat, text_feat)
        fused = self.unify(masked, mask, image)
        out["loss_vlm"], logits["vlm"] = self._mlm(fused, b)
        positive_cls = fused[:, 0] if clean is masked else self.unify(clean, mask, image)[:, 0]
        sims = (image_feat @ text_feat.t() / temperature).detach()
        out["loss_itm"] = self._itm(image, clean, mask, b["ids"], sims, positive_cls)

    def _itm(self, image, text, mask, ids, sims, positive_cls) -> torch.Tensor:
        """CE over B positive pairs (label 1) and their mined negatives (label 0)."""
        n = ids.shape[0]
        positive = (ids.unsqueeze(1) == ids.unsqueeze(0)).all(dim=-1)
        img, txt = itm_negatives(sims, positive, self.generator)
        if len(img) == 0:
            return self.itm_head(positive_cls).sum() * 0.0
        negative_cls = self.unify(text[txt], mask[txt], image[img])[:, 0]
        scores = self.itm_head(torch.cat([positive_cls, negative_cls])).float()
        labels = torch.cat([torch.ones(n), torch.zeros(len(img))]).long().to(scores.device)
        return F.cross_entropy(scores, labels)

    def _parallel_stream(self, b: dict, out: dict, logits: dict) -> None:
        # both sides share one padded length (collate), so they go through each tower as one batch
        n = b["ids_a"].shape[0]
        mask = torch.cat([b["mask_a"], b["mask_b"]])
        masked = self.encode_text(torch.cat([b["masked_ids_a"], b["masked_ids_b"]]), mask)
        if self.spec.ucl_text == "masked":
            clean = masked
        else:
            clean = self.encode_text(torch.cat([b["ids_a"], b["ids_b"]]), mask)
        feats = self._text_feature(clean)
        out["loss_ucl_text"] = self._ucl(feats[:n], feats[n:])
        # each side attends to the other side's uni-modal states, a->b and b->a: unmasked (Eq. 2's
        # condition t^{l_j}), or as masked for its own MLM (`tlm_condition`)
        if self.spec.tlm_condition == "clean" and clean is masked:
            clean = self.encode_text(torch.cat([b["ids_a"], b["ids_b"]]), mask)
        seen = clean if self.spec.tlm_condition == "clean" else masked
        other = torch.cat([seen[n:], seen[:n]])
        other_mask = torch.cat([mask[n:], mask[:n]])
        fused = self.unify(masked, mask, other, other_mask)
        loss_a, logits_a = self._mlm(fused[:n], b, "_a")
        loss_b, logits_b = self._mlm(fused[n:], b, "_b")
        out["loss_tlm"] = loss_a + loss_b
        logits["tlm"] = torch.cat([logits_a, logits_b])

    def _mono_stream(self, b: dict, out: dict, logits: dict) -> None:
        fused = self.unify(self.encode_text(b["masked_ids"], b["mask"]), b["mask"])
        out["loss_xmlm"], logits["xmlm"] = self._mlm(fused, b)

    def forward(self, batch: dict, return_logits: bool = False) -> dict[str, torch.Tensor]:
        """Losses of a `collate` batch holding any subset of the streams "image", "parallel",
        "mono": `loss` (their sum), each `loss_<task>` of the present streams and `tokens` (text
        tokens read); with `return_logits`, `logits_vlm` / `logits_tlm` / `logits_xmlm` [N, V] at
        the masked positions (row order of the labels)."""
        out: dict[str, torch.Tensor] = {}
        logits: dict[str, torch.Tensor] = {}
        tokens = self.temp.new_zeros(())  # stays on the device: no host sync per step
        routines = {"image": self._image_stream, "parallel": self._parallel_stream, "mono": self._mono_stream}
        for name, routine in routines.items():
            b = batch.get(name)
            if not b or next(iter(b.values())).shape[0] == 0:
                continue
            routine(b, out, logits)
            tokens = tokens + sum(v.sum() for k, v in b.items() if k == "mask" or k.startswith("mask_"))
        loss = sum(out.values(), self.temp.new_zeros(()))
        result = {"loss": loss, **out, "tokens": tokens.detach().float()}
        if return_logits:
            result.update({f"logits_{k}": v for k, v in logits.items()})
        return result

    @functools.cached_property
    def _flop_count(self) -> WsmvlpFlops:
        return WsmvlpFlops(self)

    def train_flops(self, batch: dict) -> float:
        """Training FLOPs of a host batch, for MFU (mvlp_core/model/wsmvlp/flops.py)."""
        return self._flop_count(batch)

    # ---------------------------------------------------------------- scoring (parts/dual_scoring.py)
    def _joint_cls(self, image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The unified encoder's [CLS] of each text attending to its image's patch states."""
        return self.unify(text, mask, image)[:, 0]

    def _match(self, joint: torch.Tensor) -> torch.Tensor:
        """ITM log-odds (logit "match" − logit "no match") of joint [CLS] states."""
        scores = self.itm_head(joint).float()
        return scores[..., 1] - scores[..., 0]

    def image_transform(self):
        """The PIL -> uint8 tensor transform with the image size this model was built with."""
        from mvlp_core.model.wsmvlp.batch import image_transform

        return image_transform(self.spec)

    # ---------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str | Path) -> None:
        """config.json ("family": "wsmvlp", spec, HF configs), model.safetensors, tokenizer/."""
        from mvlp_core.model.wsmvlp.build import save

        save(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> WsmvlpModel:
        from mvlp_core.model.wsmvlp.build import load

        return load(folder)
