"""Training FLOPs of a UniGen batch for MFU, counted on the host from the collated batch (no device
sync), by the convention in mvlp_core/model/parts/flops.py, over every row the forward runs: the
batch's own rows, the [match] rows it derives (each image-caption pair plus one hard-negative text
per image and one hard-negative image per text: 3 per pair, the most the miner returns), and the
parallel pairs the consistency and sentence-alignment terms encode (the English side and the
consistency teacher under no_grad).

The Q-Former's cross-attention keys and values read the ViT's patch tokens, not its queries, and
are counted on those. `tests/unit/test_model_flops.py` holds the count to torch's FLOP counter.
"""

from __future__ import annotations

import torch

from mvlp_core.model.parts.flops import Rows, attention, weights


class UniGenFlops:
    """The count for one model; parameter counts are walked once (freezing is set at build)."""

    def __init__(self, model) -> None:
        enc = model.image_encoder
        vit, qf = enc.vision_model, enc.qformer
        self.spec = model.spec
        self.vit = weights([vit])
        self.vit_shape = (vit.config.num_hidden_layers, vit.config.hidden_size)
        self.patches = (model.spec.image_size // vit.config.patch_size) ** 2 + 1
        cross_kv = ("crossattention.attention.key", "crossattention.attention.value")
        self.qf_kv = weights([qf], lambda name: name.endswith(cross_kv))
        self.qf = weights([qf], lambda name: not name.endswith(cross_kv))
        c = qf.config
        self.qf_shape = (
            c.num_hidden_layers,
            c.hidden_size,
            -(-c.num_hidden_layers // c.cross_attention_frequency),
        )
        self.qf_trained = any(p.requires_grad for p in qf.parameters()) or enc.query_tokens.requires_grad
        self.text = weights([model.text_encoder])
        t = model.text_encoder.config
        self.text_shape = (t.num_hidden_layers, t.hidden_size)
        g = model.decoder.config
        self.decoder = weights([model.decoder.transformer.h])
        self.decoder_shape = (g.n_layer, g.n_embd)
        self.prefix = weights([model.image_to_decoder, model.text_to_decoder])
        self.lm_head = weights([model.decoder.lm_head])
        self.yes, self.no = len(model.yes_ids) + 1, len(model.no_ids) + 1

    def _text_tower(self, rows: Rows, grad: bool = True) -> float:
        layers, width = self.text_shape
        w = self.text.flops(rows.tokens, grad_through=False, no_grad=not grad)
        return w + attention(layers, width, rows.sum_sq, grad and bool(self.text.trained))

    def _decoder(self, rows: Rows, supervised: float, grad: bool = True) -> float:
        layers, width = self.decoder_shape
        w = self.decoder.flops(rows.tokens, grad_through=True, no_grad=not grad)
        w += self.prefix.flops(rows.tokens, grad_through=True, no_grad=not grad)
        w += self.lm_head.flops(supervised, grad_through=True, no_grad=not grad)
        return w + attention(layers, width, rows.sum_sq, grad)

    def __call__(self, batch: dict) -> float:
        from mvlp_core.model.unigen.model import TRANS, USES_IMAGE, USES_TEXT

        spec, q = self.spec, self.spec.num_query_tokens
        task, has_image, has_caption = batch["task"], batch["has_image"], batch["has_caption"]
        single = batch["pixel_values"].dim() == 4
        uses_image = torch.isin(task, torch.tensor(USES_IMAGE)) & has_image
        uses_text = torch.isin(task, torch.tensor(USES_TEXT))
        itc = has_image & has_caption & single
        enc_len, itc_len = batch["enc_mask"].sum(1), batch["itc_mask"].sum(1)
        dec_len = batch["dec_mask"].sum(1)
        if single:
            per_row = (uses_image | itc).long()
        else:
            per_row = (batch["image_mask"] & uses_image.unsqueeze(1)).sum(1)
        images = float(per_row.sum())

        # image tower: ViT over the patches, Q-Former queries reading them
        vit_layers, vit_width = self.vit_shape
        vit_grad = bool(self.vit.trained)
        flops = self.vit.flops(images * self.patches, grad_through=False)
        flops += attention(vit_layers, vit_width, images * self.patches**2, vit_grad)
        qf_layers, qf_width, cross_layers = self.qf_shape
        qf_grad = self.qf_trained or vit_grad
        flops += self.qf.flops(images * q, grad_through=vit_grad)
        flops += self.qf_kv.flops(images * self.patches, grad_through=vit_grad)
        flops += attention(qf_layers, qf_width, images * q * q, qf_grad)
        flops += 4.0 * cross_layers * qf_width * images * q * self.patches * (3.0 if qf_grad else 1.0)

        # text encoder: the batch's sources, the contrastive captions, the parallel pairs
        text_rows = Rows.of(enc_len[uses_text])
        if itc.any():
            text_rows += Rows.of(itc_len[itc])
        pairs = (task == TRANS) & ~has_image & has_caption
        with_pairs = bool(pairs.any()) and (bool(spec.delta_xlc) or bool(spec.epsilon_sent))
        if with_pairs:
            text_rows += Rows.of(enc_len[pairs])
            flops += self._text_tower(Rows.of(itc_len[pairs]), grad=False)  # English side, held fixed
        flops += self._text_tower(text_rows)

        # decoder: the batch's rows, the derived [match] rows, the consistency rows
        prompt = q * per_row * uses_image + enc_len * uses_text + 1
        flops += self._decoder(Rows.of(prompt + dec_len), float(dec_len.sum()))
        n = int(itc.sum())
        if n >= 2 and spec.beta_match:
            caption = itc_len[itc]
            yes_rows = Rows.of(q + caption + 1 + self.yes)
            no_rows = Rows.of(q + caption + 1 + self.no)
            flops += self._decoder(yes_rows + no_rows + no_rows, float(n * (self.yes + 2 * self.no)))
        if with_pairs and spec.delta_xlc and bool((uses_image | itc).any()):
            m = float(pairs.sum())
            flops += self._decoder(Rows.of(q + enc_len[pairs] + 1), m)
            flops += self._decoder(Rows.of(q + itc_len[pairs] + 1), m, grad=False)
        return flops
