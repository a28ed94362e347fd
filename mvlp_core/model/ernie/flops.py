"""Training FLOPs of an ERNIE-UniX² batch for MFU, counted on the host from the collated batch (no
device sync), by the convention in mvlp_core/model/parts/flops.py, over every pass the forward runs:

- the ViT over each image's patches and [CLS] (CMCL, ITM, MLM on image-text, vPLM, mMMT), trained;
  its patch projection without an input gradient (the pixels take none);
- the text encoder over each text (a row without a token reads one: `ErnieModel.encode_text`);
- the cross-modal encoder over [MM_CLS] + the text + the image's patches (through `image_in`), for
  ITM's positives and negatives (one text-replaced and one image-replaced negative a pair, the most
  the miner returns; a drawn caption counted at the batch's mean length), MLM, and the encoder side
  of the generation tasks;
- the decoder over its input tokens, with cross-attention to the cross-modal encoder's rows, and
  its LM head over every decoder token; the MLM head at the masked positions;
- the projections of the dual encoder's [CLS] states (CMCL, CLCL; ITM's hard-negative similarities
  under no_grad) and ITM's head.

Attention is counted over full rows, the decoder's causal self-attention included (torch's counter
counts what the kernel computes). `tests/unit/test_ernie_model.py` holds it to torch's counter.
"""

from __future__ import annotations

import torch

from mvlp_core.model.parts.flops import Rows, attention, weights

_CROSS_KV = ("crossattention.self.key", "crossattention.self.value")


class ErnieFlops:
    """The count for one model; parameter counts are walked once."""

    def __init__(self, model) -> None:
        vit = model.vision
        self.vit = weights([vit], lambda name: "patch_embeddings" not in name)
        # the patch projection reads the pixels, which take no gradient: forward and weight
        # gradient only, on the patches ([CLS] is not projected)
        self.patch_embed = weights([vit.embeddings.patch_embeddings])
        self.vit_shape = (vit.config.num_hidden_layers, vit.config.hidden_size)
        self.patches = (model.spec.image_size // vit.config.patch_size) ** 2 + 1
        width = model.embeddings.word_embeddings.embedding_dim
        self.width = width
        self.text = weights([model.text_layers])
        self.fusion = weights([model.fusion_layers])
        decoder = model.decoder_layers
        self.dec_self = weights([decoder], lambda name: ".crossattention." not in f".{name}.")
        self.cross_kv = weights([decoder], lambda name: name.endswith(_CROSS_KV))
        self.cross_qo = weights(
            [decoder], lambda name: ".crossattention." in f".{name}." and not name.endswith(_CROSS_KV)
        )
        self.layers = (len(model.text_layers), len(model.fusion_layers), len(decoder))
        self.image_in = weights([model.image_in])
        self.vision_proj, self.text_proj = weights([model.vision_proj]), weights([model.text_proj])
        self.mlm_head, self.lm_head = weights([model.mlm_head]), weights([model.lm_head])
        self.itm_head = weights([model.itm_head])
        self.hard = model.spec.itm_negatives == "hard"

    def _vit(self, n: int) -> float:
        layers, width = self.vit_shape
        p = self.patches
        embed = (4.0 * self.patch_embed.trained + 2.0 * self.patch_embed.frozen) * n * (p - 1)
        body = self.vit.flops(n * p, grad_through=False)
        return embed + body + attention(layers, width, n * p * p, bool(self.vit.trained))

    def _text(self, lengths: torch.Tensor) -> float:
        rows = Rows.of(lengths.clamp(min=1))  # an empty row reads its first position
        return self.text.flops(rows.tokens, grad_through=False) + attention(
            self.layers[0], self.width, rows.sum_sq, True
        )

    def _fuse(self, lengths: torch.Tensor, images: int) -> float:
        """The cross-modal encoder over [MM_CLS] + each text (+ its image's patches when `images`)."""
        extra = 1 + (self.patches if images else 0)
        rows = Rows.of(lengths.double() + extra)
        flops = self.fusion.flops(rows.tokens, grad_through=True)
        flops += attention(self.layers[1], self.width, rows.sum_sq, True)
        if images:
            flops += self.image_in.flops(images * self.patches, grad_through=True)
        return flops

    def _decode(self, dec_lengths: torch.Tensor, memory_lengths: torch.Tensor) -> float:
        layers, width = self.layers[2], self.width
        rows = Rows.of(dec_lengths)
        memory = memory_lengths.double()
        flops = self.dec_self.flops(rows.tokens, grad_through=True) + attention(
            layers, width, rows.sum_sq, True
        )
        flops += self.cross_qo.flops(rows.tokens, grad_through=True)
        flops += self.cross_kv.flops(float(memory.sum()), grad_through=True)
        flops += 4.0 * layers * width * float((dec_lengths.double() * memory).sum()) * 3.0
        return flops + self.lm_head.flops(rows.tokens, grad_through=True)

    def _mlm(self, labels: torch.Tensor) -> float:
        return self.mlm_head.flops(float((labels != -100).sum()), grad_through=True)

    def _seq2seq(self, b: dict, images: bool) -> float:
        enc = b["enc_mask"].sum(1)
        n = len(enc)
        flops = (self._vit(n) if images else 0.0) + self._text(enc) + self._fuse(enc, n if images else 0)
        memory = enc + 1 + (self.patches if images else 0)
        return flops + self._decode(b["dec_mask"].sum(1), memory)

    def __call__(self, batch: dict) -> float:
        flops = 0.0
        if (b := batch.get("cmcl")) and len(b["ids"]):
            n = len(b["ids"])
            flops += self._vit(n) + self._text(b["mask"].sum(1))
            flops += self.vision_proj.flops(n, True) + self.text_proj.flops(n, True)
        if b := batch.get("clcl"):
            lengths = torch.cat([b["mask_a"].sum(1), b["mask_b"].sum(1)])
            flops += self._text(lengths) + self.text_proj.flops(len(lengths), True)
        if b := batch.get("itm"):
            lengths = b["mask"].sum(1)
            n = len(lengths)
            flops += self._vit(n) + self._text(lengths)
            if self.hard:  # the similarities the negatives are drawn from, without gradients
                flops += self.vision_proj.flops(n, True, no_grad=True) + self.text_proj.flops(
                    n, True, no_grad=True
                )
            # negatives, 2 a pair: a text-replaced one (a drawn caption: the batch's mean length)
            # and an image-replaced one (every caption once: its own length)
            drawn = torch.full((n,), float(lengths.double().mean()), dtype=torch.float64)
            pairs = torch.cat([lengths.double(), drawn, lengths.double()]) if n >= 2 else lengths.double()
            negatives = len(pairs) - n
            flops += self._fuse(pairs, n + negatives) + self.itm_head.flops(n + negatives, True)
        for task in ("mlm_image", "mlm_text"):
            if b := batch.get(task):
                lengths = b["mask"].sum(1)
                images = len(lengths) if task == "mlm_image" else 0
                flops += (self._vit(images) if images else 0.0) + self._text(lengths)
                flops += self._fuse(lengths, images) + self._mlm(b["labels"])
        if b := batch.get("plm"):
            flops += self._seq2seq(b, images=False)
        if b := batch.get("mt"):
            flops += self._seq2seq(b, images=False)
        if b := batch.get("vplm"):
            flops += self._seq2seq(b, images=True)
        if b := batch.get("mmmt"):
            flops += self._seq2seq(b, images=True) + self._mlm(b["enc_labels"])
        return flops
