"""Training FLOPs of a weakly-supervised mVLP batch for MFU, counted on the host from the collated
batch (no device sync), by the convention in mvlp_core/model/parts/flops.py, over every pass the
forward runs:

- image stream: the ViT over each image's patches; the text encoder over the masked captions (and
  the clean ones when `ucl_text: clean`); the unified encoder over them with cross-attention to
  the patches, for the masked captions, the clean positives (`clean`) and the ITM negatives (one
  hard-negative text per image and one hard-negative image per text: 2 per pair, the most the
  miner returns); the MLM head at the masked positions;
- parallel stream: both sides through the text encoder (masked, and clean when UCL or TLM reads
  them: `ucl_text`, `tlm_condition`), then the unified encoder with each side attending to the
  other; the MLM head at both sides' masked positions;
- mono stream: text encoder and unified encoder without cross-attention (skipped without memory).

The cross-attention keys and values read the memory (patches or the other side), not the text,
and are counted on those tokens. `tests/unit/test_wsmvlp_model.py` holds it to torch's counter.
"""

from __future__ import annotations

import torch

from mvlp_core.model.parts.flops import Rows, attention, weights

_CROSS_KV = ("crossattention.self.key", "crossattention.self.value")


class WsmvlpFlops:
    """The count for one model; parameter counts are walked once."""

    def __init__(self, model) -> None:
        self.clean = model.spec.ucl_text != "masked"
        # the parallel stream encodes clean sides too for UCL (`ucl_text`) or TLM (`tlm_condition`)
        self.clean_pairs = self.clean or model.spec.tlm_condition == "clean"
        vit = model.vision
        self.vit = weights([vit])
        self.vit_shape = (vit.config.num_hidden_layers, vit.config.hidden_size)
        size, patch = model.spec.image_size, vit.config.patch_size
        self.patches = (size // patch) ** 2 + 1
        self.text = weights([model.text_layers])
        layers = model.fusion_layers
        self.fusion_self = weights([layers], lambda name: ".crossattention." not in f".{name}.")
        self.cross_kv = weights([layers], lambda name: name.endswith(_CROSS_KV))
        self.cross_qo = weights(
            [layers], lambda name: ".crossattention." in f".{name}." and not name.endswith(_CROSS_KV)
        )
        width = model.embeddings.word_embeddings.embedding_dim
        self.text_shape = (len(model.text_layers), width)
        self.fusion_shape = (len(layers), width)
        self.lm_head = weights([model.lm_head])

    def _text(self, rows: Rows) -> float:
        layers, width = self.text_shape
        return self.text.flops(rows.tokens, grad_through=False) + attention(layers, width, rows.sum_sq, True)

    def _fusion(self, rows: Rows, memory_tokens: float = 0.0, cross_pairs: float = 0.0) -> float:
        """The unified encoder over `rows`; with memory, cross-attention to `memory_tokens` tokens,
        `cross_pairs` = Σ over rows of (row length × its memory's length)."""
        layers, width = self.fusion_shape
        flops = self.fusion_self.flops(rows.tokens, grad_through=True) + attention(
            layers, width, rows.sum_sq, True
        )
        if memory_tokens:
            flops += self.cross_qo.flops(rows.tokens, grad_through=True)
            flops += self.cross_kv.flops(memory_tokens, grad_through=True)
            flops += 4.0 * layers * width * cross_pairs * 3.0
        return flops

    def _mlm(self, labels: torch.Tensor) -> float:
        return self.lm_head.flops(float((labels != -100).sum()), grad_through=True)

    def __call__(self, batch: dict) -> float:
        flops = 0.0
        if image := batch.get("image"):
            lengths = image["mask"].sum(1)
            b, p = len(lengths), self.patches
            layers, width = self.vit_shape
            vit_trained = bool(self.vit.trained)  # a frozen ViT runs without autograd: forward only
            flops += self.vit.flops(b * p, grad_through=False) + attention(
                layers, width, b * p * p, vit_trained
            )
            rows = Rows.of(lengths)
            passes = 2 if self.clean else 1  # the masked captions and, with clean texts, the clean ones
            flops += passes * (self._text(rows) + self._fusion(rows, b * p, rows.tokens * p))
            if b >= 2:  # the ITM negatives: 2 per pair, captions of the batch's mean length
                mean = rows.tokens / b
                negatives = Rows(2 * b * mean, 2 * b * mean * mean)
                flops += self._fusion(negatives, 2 * b * p, negatives.tokens * p)
            flops += self._mlm(image["labels"])
        if parallel := batch.get("parallel"):
            a, b = parallel["mask_a"].sum(1), parallel["mask_b"].sum(1)
            rows = Rows.of(torch.cat([a, b]))
            flops += self._text(rows) * (2 if self.clean_pairs else 1)
            flops += self._fusion(rows, rows.tokens, 2.0 * float((a * b).sum()))
            flops += self._mlm(parallel["labels_a"]) + self._mlm(parallel["labels_b"])
        if mono := batch.get("mono"):
            rows = Rows.of(mono["mask"].sum(1))
            flops += self._text(rows) + self._fusion(rows) + self._mlm(mono["labels"])
        return flops
