"""ERNIE-UniX² (Shan et al., 2022; seed 000): a unified cross-lingual cross-modal encoder–decoder
for understanding and generation.

Components (paper Fig. 2):
- A, the dual encoder: a ViT (its [CLS] through `vision_proj`, normalised, is the image's global
  feature) and the text encoder, XLM-R's embeddings and first `text_layers` layers (its [CLS] through
  `text_proj`, normalised, is the text's);
- C, the cross-lingual cross-modal encoder: BERT layers over [MM_CLS] + the text encoder's states +
  the image's patch states (through `image_in`), concatenated, each part with its own modality
  embedding; the output at [MM_CLS] is the joint representation (ITM, IGLUE heads);
- B, the decoder: causal BERT layers with cross-attention to C's output, told the language to write
  by a learned embedding added at its first position (mBART's language code), reading through a
  head tied to the word embeddings.

Losses, one per task (§3.2; one task per micro-step, so a batch usually holds one):
    loss_cmcl      InfoNCE image ↔ caption (any language), Eq. 1: CE(t→i) + CE(i→t), one learnable τ
    loss_clcl      InfoNCE sentence ↔ translation, Eq. 2, the same τ
    loss_itm       BCE of a sigmoid on [MM_CLS] over B positives, per image a text and per text an
                   image from the batch as negatives (uniform; ALBEF's hard with itm_negatives: hard)
    loss_mlm_image MLM of a caption given its image (Eq. 4)
    loss_mlm_text  MLM of monolingual text (CC-100's MLM, Table 6)
    loss_plm       the suffix of a sentence generated from its prefix (Eq. 6; T_p 0 or 20%)
    loss_vplm      the same with the image in the encoder (Eq. 5; T_p = 0 is captioning)
    loss_mt        the translation generated from the source (Eq. 8)
    loss_mmmt      the translation generated from the image and the source with [MASK]s (Eq. 7) …
    loss_mmmt_mlm  … and those masked source tokens predicted from C's output ("we also perform MLM")
`loss` is their sum. Generation losses are means over the target tokens.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig, ViTModel, XLMRobertaConfig
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings

from mvlp_core.model.ernie.flops import ErnieFlops
from mvlp_core.model.losses import contrastive_loss, mine_hard_negatives
from mvlp_core.model.parts import host_index
from mvlp_core.model.parts.attention import pin_sdpa
from mvlp_core.model.parts.bert_layers import FusionLayer, MLMHead
from mvlp_core.model.parts.dual_scoring import DualEncoderScoring
from mvlp_core.model.parts.images import PixelNorm
from mvlp_core.model.parts.masking import IGNORE
from mvlp_core.spec.model_ernie import ErnieModelSpec

TEXT, IMAGE = 0, 1  # modality rows in the cross-modal encoder


def _zero(anchor: torch.Tensor) -> torch.Tensor:
    return anchor.sum() * 0.0


class ErnieModel(DualEncoderScoring, nn.Module):
    """The model. `config` holds the spec, the ViT and XLM-R configs and the layer counts, so
    `from_pretrained` rebuilds it without the hub. `generator` (None: the global RNG) draws the ITM
    negatives."""

    HEAD_PARAMS: tuple[str, ...] = ()

    def __init__(self, config: dict, tokenizer) -> None:
        super().__init__()
        self.config = config
        self.spec = ErnieModelSpec.model_validate(config["spec"])
        self.pixel_norm = PixelNorm(config["image_mean"], config["image_std"])
        self.tokenizer = tokenizer
        self.generator: torch.Generator | None = None
        vision_config = ViTConfig(**config["vision_config"])
        text_config = XLMRobertaConfig(**config["text_config"])
        width = text_config.hidden_size
        n_text = config["text_layers"]
        if not 0 < n_text < text_config.num_hidden_layers:
            raise ValueError(
                f"text_layers {n_text} leaves no cross-modal layer of XLM-R's {text_config.num_hidden_layers}"
            )
        self.vision = ViTModel(vision_config, add_pooling_layer=False)
        pin_sdpa(self.vision)
        self.image_in = nn.Linear(vision_config.hidden_size, width)
        self.embeddings = XLMRobertaEmbeddings(text_config)
        self.text_layers = nn.ModuleList(FusionLayer(text_config) for _ in range(n_text))
        self.fusion_layers = nn.ModuleList(
            FusionLayer(text_config) for _ in range(text_config.num_hidden_layers - n_text)
        )
        self.decoder_layers = nn.ModuleList(
            FusionLayer(text_config, cross_attention=True, causal=True)
            for _ in range(config["decoder_layers"])
        )
        self.mm_cls = nn.Parameter(torch.zeros(width))
        self.modality = nn.Embedding(2, width)
        self.lang_embed = nn.Embedding(len(self.spec.languages) + 1, width)
        self.mlm_head = MLMHead(text_config, self.embeddings.word_embeddings)
        self.lm_head = MLMHead(text_config, self.embeddings.word_embeddings)
        embed_dim = config["embed_dim"]
        self.vision_proj = nn.Linear(vision_config.hidden_size, embed_dim)
        self.text_proj = nn.Linear(width, embed_dim)
        self.itm_head = nn.Linear(width, 1)
        self.temp = nn.Parameter(torch.tensor(float(self.spec.temperature)))
        self._init_weights(text_config.initializer_range)

    def _init_weights(self, std: float) -> None:
        """BERT's init for everything but the ViT (which HF initialises): normal(0, std) weights,
        zero biases, unit LayerNorms; each decoder cross-attention starts as its self-attention."""
        vision = {id(m) for m in self.vision.modules()}
        for m in self.modules():
            if id(m) in vision:
                continue
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=std)
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    nn.init.zeros_(m.weight[m.padding_idx])
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mm_cls, std=std)
        for layer in self.decoder_layers:
            layer.init_cross_from_self()

    # ---------------------------------------------------------------- components
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ViT patch states [B, 1+P, Dv] ([CLS] first) of uint8 images (or normalised floats)."""
        pixels = self.pixel_norm(pixel_values)
        states = self.vision(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        return states.to(self.image_in.weight.dtype)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The text encoder's states [B, T, D]. A row with no token (an empty PLM prefix) reads its
        first position, so that no attention row is empty; `fuse` leaves it out by its mask."""
        reads = mask.clone()
        reads[:, 0] = 1
        hidden = self.embeddings(input_ids=ids)
        for layer in self.text_layers:
            hidden = layer(hidden, reads)
        return hidden

    def fuse(
        self, text: torch.Tensor, mask: torch.Tensor, image: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Component C over [MM_CLS] + text states (+ image patch states): (states [B, 1+T(+P), D],
        their mask). Position 0 is [MM_CLS]; the text's states follow it."""
        b = text.shape[0]
        cls = (self.mm_cls + self.modality.weight[TEXT]).expand(b, 1, -1)
        parts = [cls, text + self.modality.weight[TEXT]]
        masks = [mask.new_ones(b, 1), mask]
        if image is not None:
            parts.append(self.image_in(image) + self.modality.weight[IMAGE])
            masks.append(mask.new_ones(b, image.shape[1]))
        hidden, joint = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        for layer in self.fusion_layers:
            hidden = layer(hidden, joint)
        return hidden, joint

    def decode(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        lang: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Component B's logits [N, Td, V] for teacher-forced input `ids`; position t reads ids ≤ t."""
        hidden = self.embeddings(input_ids=ids)
        start = hidden[:, :1] + self.lang_embed(lang)[:, None]
        hidden = torch.cat([start, hidden[:, 1:]], dim=1)
        for layer in self.decoder_layers:
            hidden = layer(hidden, mask, memory, memory_mask)
        return self.lm_head(hidden)

    def towers(self) -> list[nn.Module]:
        """What `pretrain.compile` compiles: the ViT and each layer."""
        return [self.vision, *self.text_layers, *self.fusion_layers, *self.decoder_layers]

    def _image_feature(self, states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(states[:, 0]), dim=-1)

    def _text_feature(self, states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(states[:, 0]), dim=-1)

    def _temperature(self) -> torch.Tensor:
        return self.temp.clamp(*self.spec.temperature_range)

    def _contrastive(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Eq. 1/2: −1/N (Σ log p(a→b) + Σ log p(b→a)), i.e. the two directions' mean CEs added."""
        return 2 * contrastive_loss(a, b, self._temperature())

    def _mlm(self, states: torch.Tensor, labels: torch.Tensor, at, of) -> torch.Tensor:
        """CE at the labelled text positions; `states` are C's text part [N, T, D]."""
        index = host_index.fitting(at, of, labels != IGNORE)
        if index.numel() == 0:
            return _zero(states)
        logits = self.mlm_head(states.flatten(0, 1).index_select(0, index)).float()
        return F.cross_entropy(logits, labels.flatten().index_select(0, index))

    @staticmethod
    def _generation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean CE over the target tokens (every row has one at least: its </s>)."""
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

    # ---------------------------------------------------------------- tasks
    def _cmcl(self, b: dict) -> dict[str, torch.Tensor]:
        if b["ids"].shape[0] == 0:
            # a rank left without a usable record still joins the loss's all-gathers (and their
            # backward), or the ranks that have rows wait on it forever: no rows, a gradient path
            dv, d = self.vision_proj.in_features, self.text_proj.in_features
            image = F.normalize(self.vision_proj(self.temp.new_zeros(0, dv)), dim=-1)
            text = F.normalize(self.text_proj(self.temp.new_zeros(0, d)), dim=-1)
        else:
            image = self._image_feature(self.encode_image(b["pixel_values"]))
            text = self._text_feature(self.encode_text(b["ids"], b["mask"]))
        return {"loss_cmcl": self._contrastive(image, text)}

    def _clcl(self, b: dict) -> dict[str, torch.Tensor]:
        a = self._text_feature(self.encode_text(b["ids_a"], b["mask_a"]))
        c = self._text_feature(self.encode_text(b["ids_b"], b["mask_b"]))
        return {"loss_clcl": self._contrastive(a, c)}

    def _itm(self, b: dict) -> dict[str, torch.Tensor]:
        image = self.encode_image(b["pixel_values"])
        ids, mask = b["ids"], b["mask"]
        text = self.encode_text(ids, mask)
        n = ids.shape[0]
        positive = (ids.unsqueeze(1) == ids.unsqueeze(0)).all(dim=-1)  # identical captions too
        if self.spec.itm_negatives == "hard":
            with torch.no_grad():
                sims = self._image_feature(image) @ self._text_feature(text).t() / self._temperature()
        else:
            sims = torch.zeros(n, n, device=ids.device)  # uniform over each row's negatives
        img_a, txt_a, img_b, txt_b = mine_hard_negatives(sims, positive, self.generator)
        img = torch.cat([torch.arange(n, device=ids.device), img_a, img_b])
        txt = torch.cat([torch.arange(n, device=ids.device), txt_a, txt_b])
        joint, _ = self.fuse(text[txt], mask[txt], image[img])
        logits = self.itm_head(joint[:, 0]).squeeze(-1).float()
        labels = torch.cat([torch.ones(n), torch.zeros(len(img) - n)]).to(logits.device)
        return {"loss_itm": F.binary_cross_entropy_with_logits(logits, labels)}

    def _mlm_image(self, b: dict) -> dict[str, torch.Tensor]:
        image = self.encode_image(b["pixel_values"])
        states, _ = self.fuse(self.encode_text(b["masked_ids"], b["mask"]), b["mask"], image)
        t = b["mask"].shape[1]
        return {
            "loss_mlm_image": self._mlm(
                states[:, 1 : 1 + t], b["labels"], b.get("labels_at"), b.get("labels_of")
            )
        }

    def _mlm_text(self, b: dict) -> dict[str, torch.Tensor]:
        states, _ = self.fuse(self.encode_text(b["masked_ids"], b["mask"]), b["mask"])
        t = b["mask"].shape[1]
        return {
            "loss_mlm_text": self._mlm(
                states[:, 1 : 1 + t], b["labels"], b.get("labels_at"), b.get("labels_of")
            )
        }

    def _seq2seq(self, b: dict, with_image: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoder logits, C's states, their mask) of a generation sub-batch."""
        image = self.encode_image(b["pixel_values"]) if with_image else None
        memory, memory_mask = self.fuse(self.encode_text(b["enc_ids"], b["enc_mask"]), b["enc_mask"], image)
        logits = self.decode(b["dec_ids"], b["dec_mask"], b["lang"], memory, memory_mask)
        return logits, memory, memory_mask

    def _generation(self, task: str, b: dict) -> dict[str, torch.Tensor]:
        """PLM and MT (text in the encoder) or vPLM (the image too): the decoder's CE."""
        logits, _, _ = self._seq2seq(b, with_image=task == "vplm")
        return {f"loss_{task}": self._generation_loss(logits, b["dec_labels"])}

    def _mmmt(self, b: dict) -> dict[str, torch.Tensor]:
        logits, memory, _ = self._seq2seq(b, with_image=True)
        t = b["enc_mask"].shape[1]
        return {
            "loss_mmmt": self._generation_loss(logits, b["dec_labels"]),
            "loss_mmmt_mlm": self._mlm(
                memory[:, 1 : 1 + t], b["enc_labels"], b.get("enc_labels_at"), b.get("enc_labels_of")
            ),
        }

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Losses of a `collate` batch holding any subset of the tasks: `loss` (their sum), each
        task's `loss_<task>` and `tokens` (text tokens read). A batch with no task (no record had
        the captions its task needs) gives a zero loss."""
        out: dict[str, torch.Tensor] = {}
        tokens = self.temp.new_zeros(())  # stays on the device: no host sync per step
        routines = {
            "cmcl": self._cmcl,
            "clcl": self._clcl,
            "itm": self._itm,
            "mlm_image": self._mlm_image,
            "mlm_text": self._mlm_text,
            "plm": functools.partial(self._generation, "plm"),
            "vplm": functools.partial(self._generation, "vplm"),
            "mt": functools.partial(self._generation, "mt"),
            "mmmt": self._mmmt,
        }
        for name, routine in routines.items():
            b = batch.get(name)
            if not b:
                continue
            out.update(routine(b))
            tokens = tokens + sum(
                v.sum() for k, v in b.items() if k.endswith("mask") or k.startswith("mask_")
            )
        loss = sum(out.values(), self.temp * 0.0)
        return {"loss": loss, **out, "tokens": tokens.detach().float()}

    @functools.cached_property
    def _flop_count(self) -> ErnieFlops:
        return ErnieFlops(self)

    def train_flops(self, batch: dict) -> float:
        """Training FLOPs of a host batch, for MFU (mvlp_core/model/ernie/flops.py)."""
        return self._flop_count(batch)

    # ---------------------------------------------------------------- scoring (parts/dual_scoring.py)
    def _joint_cls(self, image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[MM_CLS] of the cross-modal encoder over each text and its image's patch states."""
        return self.fuse(text, mask, image)[0][:, 0]

    def _match(self, joint: torch.Tensor) -> torch.Tensor:
        """ITM log-odds of joint [MM_CLS] states (the sigmoid classifier's logit)."""
        return self.itm_head(joint).squeeze(-1).float()

    def image_transform(self):
        """The PIL -> uint8 tensor transform with the image size this model was built with."""
        from mvlp_core.model.ernie.batch import image_transform

        return image_transform(self.spec)

    # ---------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str | Path) -> None:
        """config.json ("family": "ernie", spec, HF configs), model.safetensors, tokenizer/."""
        from mvlp_core.model.ernie.build import save

        save(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ErnieModel:
        from mvlp_core.model.ernie.build import load

        return load(folder)
