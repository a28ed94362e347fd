"""UniGen: a BLIP-2 image encoder (ViT + Q-Former) and an XLM-R text encoder feed an English GPT-2
decoder, which generates the target after a task token:

    [trans]  XLM-R states of a non-English caption        -> English caption
    [cap]    Q-Former query states of the image           -> English caption
    [qus]    query states + XLM-R states of the question  -> answer
    [match]  query states + XLM-R states of a text        -> "yes" / "no"

plus an image–text contrastive loss between the first query's output (the image [CLS]) and XLM-R's
states averaged over the text's tokens (as multilingual CLIP reads XLM-R: a freshly built encoder's
first token hardly varies across texts). L = L_trans + L_cap + α·L_qus + β·L_match + γ·L_CL, plus two terms on the
parallel text that UniGen does not have (weight 0 by default): δ·cross-lingual consistency of the
[qus]/[match] readings and ε·alignment of the averaged XLM-R states.

An example with K > 1 images (MaRVL's left and right) is read one image at a time: K decoder rows,
each with one image's queries plus that image's position embedding, and the target's likelihood is
the mixture Σ_k g_k·p(target | image k, text), g = softmax of a linear gate on the text's mean
XLM-R state: which image the statement is about is a latent choice the text makes. The gate starts
at zero (a uniform mixture) and only multi-image fine-tuning trains it, with a larger learning rate
(HEAD_PARAMS). Concatenating both images' queries instead would let the decoder blend them, and a
uniform mixture cannot tell "the left image shows X" from X shown on the right.

The decoder input is [prefix embeddings, task token, target tokens]; each row's valid positions are
packed to the left (so sequences are ordinary right-padded GPT-2 inputs) and only target positions
carry labels.

Which rows each encoder reads comes as indices collate made on the host (`rows_*`, batch.py's
`row_indices`), so selecting them needs no count from the device (a GPU synchronisation each);
a batch without them, or cut after collate, is read through its masks. `python -m
benchmarks.host_syncs` lists what still synchronises in a step.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, XLMRobertaConfig, XLMRobertaModel
from transformers.activations import ACT2FN, NewGELUActivation

from mvlp_core.atomic import atomic_path, write_json
from mvlp_core.contract import StageError
from mvlp_core.model.losses import contrastive_loss, distributed, mine_hard_negatives
from mvlp_core.model.parts import host_index
from mvlp_core.model.parts.attention import pin_sdpa
from mvlp_core.model.parts.frozen_towers import FrozenTowersStayInEval, is_frozen
from mvlp_core.model.parts.pretrained import from_pretrained, load_weights
from mvlp_core.model.tokenizers import TASK_IDS, Tokenizers, load_tokenizers
from mvlp_core.model.unigen.batch import MATCH, QUS, TRANS, USES_IMAGE, USES_TEXT
from mvlp_core.model.unigen.flops import UniGenFlops
from mvlp_core.model.vision import ImageEncoder, load_blip2_encoder, random_configs, tower_width
from mvlp_core.spec import ModelSpec

CONFIG_FILE = "unigen.json"
WEIGHTS_FILE = "model.safetensors"


def _isin(task: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    return torch.isin(task, torch.tensor(ids, device=task.device))


def _index(batch: dict, key: str, rows: torch.Tensor) -> torch.Tensor:
    """The batch's host-made index of the mask `rows` (collate's `row_indices`), else one made
    from the mask (a batch built or cut elsewhere)."""
    return host_index.fitting(batch.get(key), batch.get("rows_of"), rows)


def _pack(embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """Move each row's valid positions to the left, keeping their order; trim to the longest row."""
    order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)
    order = order[:, : max(int(mask.sum(dim=1).max()), 1)]
    embeds = embeds.gather(1, order.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
    return embeds, mask.gather(1, order), labels.gather(1, order)


def _mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D] states averaged over each row's unmasked tokens -> [B, D]."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def _pad_cat(groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Stack packed groups of rows, right-padding them to a common length."""
    width = max(g[0].shape[1] for g in groups)
    out = ([], [], [])
    for embeds, mask, labels in groups:
        extra = width - embeds.shape[1]
        out[0].append(F.pad(embeds, (0, 0, 0, extra)))
        out[1].append(F.pad(mask, (0, extra)))
        out[2].append(F.pad(labels, (0, extra), value=-100))
    return tuple(torch.cat(parts) for parts in out)


class UniGen(FrozenTowersStayInEval, nn.Module):
    """The model. `config` holds the spec and every sub-model's HF config, so `from_pretrained`
    rebuilds it without the hub.

    A step may leave parameters without a gradient (the vision tower on a text-only batch, the
    multi-image heads in pretraining): the gradient averaging counts them as zeros
    (mvlp_core/train/grad_sync.py).
    """

    # parameters only multi-image fine-tuning trains: still at their initial values when it starts
    HEAD_PARAMS = ("image_gate.", "image_position")

    def __init__(self, config: dict, tokenizers: Tokenizers, parts: dict[str, nn.Module] | None = None):
        super().__init__()
        parts = parts or {}
        self.config = config
        self.spec = ModelSpec.model_validate(config["spec"])
        self.tokenizers = tokenizers
        self.image_encoder = parts.get("image_encoder") or ImageEncoder(
            config["vision_config"], config["qformer_config"], self.spec.num_query_tokens
        )
        self.text_encoder = parts.get("text_encoder") or XLMRobertaModel(
            XLMRobertaConfig(**config["text_config"]), add_pooling_layer=False
        )
        self.decoder = parts.get("decoder") or GPT2LMHeadModel(GPT2Config(**config["decoder_config"]))
        _fuse_gelu(self.decoder)
        pin_sdpa(self.text_encoder, self.decoder)
        dq, dx = self.image_encoder.hidden_size, self.text_encoder.config.hidden_size
        dg, e = self.decoder.config.n_embd, config["embed_dim"]
        self.image_to_decoder = nn.Linear(dq, dg)
        self.text_to_decoder = nn.Linear(dx, dg)
        self.vision_proj = nn.Linear(dq, e)
        self.text_proj = nn.Linear(dx, e)
        self.temperature = nn.Parameter(torch.tensor(self.spec.temperature))
        # zeros: a model that never saw several images reads each of them as it reads one
        self.image_position = nn.Parameter(torch.zeros(self.spec.max_images, dq))
        self.image_gate = nn.Linear(dx, self.spec.max_images)
        nn.init.zeros_(self.image_gate.weight)
        nn.init.zeros_(self.image_gate.bias)
        self.register_buffer("task_tokens", torch.tensor(config["task_token_ids"]), persistent=False)
        self.yes_ids, self.no_ids = config["yes_ids"], config["no_ids"]
        self._freeze()

    # ---------------------------------------------------------------- parameters
    def _middle_layers(self) -> range:
        n = self.decoder.config.n_layer
        k = self.spec.decoder_middle_layers
        if k is None:
            k = n // 2 if self.spec.size == "base" else n // 3
        k = min(k, n)
        start = (n - k) // 2
        return range(start, start + k)

    def _freeze(self) -> None:
        frozen: list[nn.Parameter] = []
        parts = {
            "vision": [self.image_encoder.vision_model],
            "qformer": [self.image_encoder.qformer],
            "text_encoder": [self.text_encoder],
            "decoder": [self.decoder],
            "decoder.middle": [self.decoder.transformer.h[i] for i in self._middle_layers()],
        }
        for name in self.spec.freeze:
            for module in parts[name]:
                frozen.extend(module.parameters())
        if "qformer" in self.spec.freeze:
            frozen.append(self.image_encoder.query_tokens)
        for p in frozen:
            p.requires_grad_(False)

    def num_params(self, trainable_only: bool = False) -> int:
        seen = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in seen.values())

    def towers(self) -> list[nn.Module]:
        """What `pretrain.compile` compiles, one graph each: the standard transformer stacks, as the
        forward calls them (the decoder's GPT-2 stack, not the LM model around it: the forward
        applies the LM head itself, to the supervised positions only). The code around them (task
        packing, in-batch negatives) has data-dependent shapes."""
        return [
            self.image_encoder.vision_model,
            self.image_encoder.qformer,
            self.text_encoder,
            self.decoder.transformer,
        ]

    def frozen_towers(self) -> list[nn.Module]:
        """The ViT when frozen: nothing trainable upstream of it (parts/frozen_towers.py)."""
        vision = self.image_encoder.vision_model
        return [vision] if is_frozen(vision) else []

    # ---------------------------------------------------------------- encoders
    def _encode_images(
        self, pixel_values: torch.Tensor, image_mask: torch.Tensor, rows: torch.Tensor, index: torch.Tensor
    ):
        """Query states [B, K*Q, Dq] (zeros for rows not in `rows`) and their mask [B, K*Q].
        `index`: `rows` as indices (`_index`), read for a batch of single images."""
        b = pixel_values.shape[0]
        pixels = pixel_values if pixel_values.dim() == 5 else pixel_values.unsqueeze(1)
        k, q, d = pixels.shape[1], self.spec.num_query_tokens, self.image_encoder.hidden_size
        wanted = image_mask & rows.unsqueeze(1)
        states = torch.zeros(b, k, q, d, device=pixels.device)
        if pixel_values.dim() == 4:
            if index.numel():
                encoded = self.image_encoder(pixel_values.index_select(0, index)).unsqueeze(1)
                states = states.to(encoded.dtype).index_copy(0, index, encoded)
        elif wanted.any():  # several images an example
            encoded = self.image_encoder(pixels[wanted])
            states = states.to(encoded.dtype).index_put(wanted.nonzero(as_tuple=True), encoded)
        mask = wanted.unsqueeze(-1).expand(-1, -1, q).reshape(b, k * q)
        return states.reshape(b, k * q, d), mask

    def _encode_text(self, ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """XLM-R states [B, L, Dx] for the rows `index` holds (zeros elsewhere)."""
        b, length = ids.shape
        states = torch.zeros(b, length, self.text_encoder.config.hidden_size, device=ids.device)
        if index.numel():
            out = self._encode_rows(ids.index_select(0, index), mask.index_select(0, index))
            states = states.to(out.dtype).index_copy(0, index, out)
        return states

    def _encode_rows(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """XLM-R states [N, L, Dx] of every row (N may be 0)."""
        if not ids.shape[0]:
            return torch.zeros(*ids.shape, self.text_encoder.config.hidden_size, device=ids.device)
        return self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    def _image_cls(self, query_states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(query_states[:, 0]), dim=-1)

    def _text_cls(self, text_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The text's contrastive feature (`itc_text`): its first token's state, or its token states
        averaged; projected, L2-normalised."""
        pooled = text_states[:, 0] if self.spec.itc_text == "cls" else _mean_pool(text_states, mask)
        return F.normalize(self.text_proj(pooled), dim=-1)

    # ---------------------------------------------------------------- decoder
    def _rows(
        self, image_states, image_mask, text_states, text_mask, task, targets, target_mask, target_labels=None
    ):
        """One packed group of decoder rows: [image queries | text states | task token | target].
        Labels: -100 on the prompt; `target_labels` (default: targets, -100 on padding) after it."""
        wte = self.decoder.transformer.wte
        prefix_img = self.image_to_decoder(image_states)
        prefix_txt = self.text_to_decoder(text_states)
        task_embed = wte(self.task_tokens[task]).unsqueeze(1)
        target_embed = wte(targets)
        embeds = torch.cat(
            [
                prefix_img,
                prefix_txt.to(prefix_img.dtype),
                task_embed.to(prefix_img.dtype),
                target_embed.to(prefix_img.dtype),
            ],
            dim=1,
        )
        ones = torch.ones_like(task).unsqueeze(1)
        mask = torch.cat([image_mask.long(), text_mask.long(), ones, target_mask.long()], dim=1)
        ignore = torch.full_like(mask[:, : mask.shape[1] - targets.shape[1]], -100)
        if target_labels is None:
            target_labels = targets.masked_fill(target_mask == 0, -100)
        labels = torch.cat([ignore, target_labels], dim=1)
        return _pack(embeds, mask, labels)

    def _primary_rows(self, batch: dict, extra_image_rows: torch.Tensor | None = None):
        """Decoder rows of the batch's own examples, the query states the encoders produced, and
        the mixing (None, or for K > 1 images per example (owner, log gate weight) of each
        per-image row: the example it reads and its image's share)."""
        task = batch["task"]
        uses_image = _isin(task, USES_IMAGE) & batch["has_image"]
        image_mask = batch.get("image_mask")
        if image_mask is None:
            k = batch["pixel_values"].shape[1] if batch["pixel_values"].dim() == 5 else 1
            image_mask = batch["has_image"].unsqueeze(1).expand(-1, k)
        uses_text = _isin(task, USES_TEXT)
        text_states = self._encode_text(
            batch["enc_ids"], batch["enc_mask"], _index(batch, "rows_text", uses_text)
        )
        text_mask = batch["enc_mask"] * uses_text.unsqueeze(1)
        if batch["pixel_values"].dim() == 5 and batch["pixel_values"].shape[1] > 1:
            return self._per_image_rows(batch, image_mask & uses_image.unsqueeze(1), text_states, text_mask)
        if extra_image_rows is None:  # the host's index holds the contrastive rows too
            rows, index = uses_image, host_index.flat_index(uses_image)
        else:
            rows = uses_image | extra_image_rows
            index = _index(batch, "rows_image", rows)
        image_states, img_mask = self._encode_images(batch["pixel_values"], image_mask, rows, index)
        img_mask = img_mask & uses_image.unsqueeze(1)
        group = self._rows(
            image_states,
            img_mask,
            text_states,
            text_mask,
            task,
            batch["dec_ids"],
            batch["dec_mask"],
            batch.get("labels"),
        )
        return group, image_states, None

    def _per_image_rows(
        self, batch: dict, wanted: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor
    ):
        """One decoder row per (example, image) of a K-image batch (one row for an example without
        images), each image's queries shifted by its position embedding, and each row's
        log gate weight over its example's images."""
        b, k = wanted.shape
        if k > self.spec.max_images:
            raise ValueError(
                f"{k} images per example; this model reads at most model.max_images={self.spec.max_images}"
            )
        none = ~wanted.any(dim=1)
        keep = wanted | (none.unsqueeze(1) & (torch.arange(k, device=wanted.device) == 0))
        owner, position = keep.nonzero(as_tuple=True)
        has = wanted[owner, position]
        q, d = self.spec.num_query_tokens, self.image_encoder.hidden_size
        states = text_states.new_zeros(len(owner), q, d)
        if has.any():
            encoded = self.image_encoder(batch["pixel_values"][owner[has], position[has]])
            encoded = encoded + self.image_position[position[has]].unsqueeze(1).to(encoded.dtype)
            states = states.to(encoded.dtype).index_put((has.nonzero(as_tuple=True)[0],), encoded)
        img_mask = has.unsqueeze(1).expand(-1, q)
        labels = batch.get("labels")
        group = self._rows(
            states,
            img_mask,
            text_states[owner],
            text_mask[owner],
            batch["task"][owner],
            batch["dec_ids"][owner],
            batch["dec_mask"][owner],
            None if labels is None else labels[owner],
        )
        gate = self.image_gate(_mean_pool(text_states, text_mask)).float()[:, :k]
        log_weight = torch.log_softmax(gate.masked_fill(~keep, float("-inf")), dim=1)[owner, position]
        return group, None, (owner, log_weight)

    @staticmethod
    def _mixture(logp: torch.Tensor, counts: torch.Tensor, mixing: tuple[torch.Tensor, torch.Tensor], b: int):
        """Per-image rows' target log-probs -> each example's log Σ_k g_k·p_k, and its token count."""
        owner, log_weight = mixing
        x = logp + log_weight
        top = x.detach().new_full((b,), float("-inf")).scatter_reduce(0, owner, x.detach(), "amax")
        total = torch.zeros(b, device=logp.device).index_add(0, owner, (x - top[owner]).exp())
        tokens = counts.new_zeros(b)
        tokens[owner] = counts  # every row of an example has its target
        return top + total.log(), tokens

    def _token_logprobs(self, embeds, mask, labels):
        """Per-row sum of target log-probs and target token counts; logits only where supervised."""
        hidden = self.decoder.transformer(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        shift = labels[:, 1:]
        where = shift != -100
        logits = self.decoder.lm_head(hidden[:, :-1][where]).float()
        logp = -F.cross_entropy(logits, shift[where], reduction="none")
        row = where.nonzero(as_tuple=True)[0]
        sums = torch.zeros(labels.shape[0], device=labels.device).index_add(0, row, logp)
        return sums, where.sum(dim=1)

    # ---------------------------------------------------------------- training
    def _match_rows(self, batch, image_states, idx, image_cls, text_states, text_cls):
        """ALBEF: every image–caption pair ("yes"), plus for each image a hard negative text and for
        each text a hard negative image ("no"), drawn ∝ softmax(s/τ) of the in-batch cosines s,
        with the contrastive loss's temperature τ (ALBEF's sampling). `idx`: the batch rows of the
        pairs."""
        n = image_cls.shape[0]
        if n < 2 or self.spec.beta_match == 0:
            return None
        ids = batch["itc_ids"][idx]
        positive = (ids.unsqueeze(1) == ids.unsqueeze(0)).all(dim=-1)
        if self.spec.hard_negatives:
            similarity = image_cls @ text_cls.t() / self.temperature.clamp(*self.spec.temperature_range)
        else:
            similarity = torch.zeros(n, n, device=image_cls.device)
        img_a, txt_a, img_b, txt_b = mine_hard_negatives(similarity, positive)
        if len(img_a) + len(img_b) == 0:
            return None
        ar = torch.arange(n, device=idx.device)
        img = torch.cat([ar, img_a, img_b])
        txt = torch.cat([ar, txt_a, txt_b])
        yes = torch.tensor(self.yes_ids + [self.tokenizers.decoder.eos_token_id], device=idx.device)
        no = torch.tensor(self.no_ids + [self.tokenizers.decoder.eos_token_id], device=idx.device)
        width = max(len(yes), len(no))
        targets = torch.full((len(img), width), self.tokenizers.decoder.pad_token_id, device=idx.device)
        target_mask = torch.zeros_like(targets)
        targets[:n, : len(yes)], target_mask[:n, : len(yes)] = yes, 1
        targets[n:, : len(no)], target_mask[n:, : len(no)] = no, 1
        q = self.spec.num_query_tokens
        img_states = image_states[idx][:, :q][img]
        img_mask = torch.ones(img_states.shape[:2], dtype=torch.long, device=idx.device)
        task = torch.full((len(img),), MATCH, device=idx.device)
        return self._rows(
            img_states, img_mask, text_states[txt], batch["itc_mask"][idx][txt], task, targets, target_mask
        )

    def _next_token_logits(self, image_states, text_states, text_mask, task) -> torch.Tensor:
        """The decoder's logits right after the task token of [image queries | text | task]."""
        n, q = image_states.shape[:2]
        empty = text_mask.new_zeros(n, 0)
        embeds, mask, _ = self._rows(
            image_states,
            torch.ones(n, q, dtype=torch.long, device=task.device),
            text_states,
            text_mask,
            task,
            empty,
            empty,
        )
        hidden = self.decoder.transformer(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(n, device=task.device), mask.sum(dim=1) - 1]
        return self.decoder.lm_head(last).float()

    def _text_pairs(self, batch: dict):
        """The batch's text-only parallel pairs, encoded once for the losses on them: (source
        states, source mask, English states held fixed, English mask), or None without pairs."""
        pairs = _index(
            batch, "rows_pairs", (batch["task"] == TRANS) & ~batch["has_image"] & batch["has_caption"]
        )
        if pairs.numel() == 0:
            return None
        src_ids, src_mask = batch["enc_ids"][pairs], batch["enc_mask"][pairs]
        en_ids, en_mask = batch["itc_ids"][pairs], batch["itc_mask"][pairs]
        source = self._encode_rows(src_ids, src_mask)
        with torch.no_grad():
            english = self._encode_rows(en_ids, en_mask)
        return source, src_mask, english, en_mask

    def _consistency(
        self, text_pairs, image_states: torch.Tensor, images: torch.Tensor
    ) -> torch.Tensor | None:
        """Cross-lingual consistency (xTune's example consistency, on parallel text): each text
        pair's source side, as a [qus] or [match] prompt over an image drawn from the batch, is
        pulled to the next-token distribution its English side gives there (KL, English side
        held fixed). English-only task fine-tuning then reaches the other languages' questions and
        statements, which [trans] alone never tied to the [qus]/[match] readings. `images`: the
        batch rows whose images were encoded."""
        if images.numel() == 0:
            return None
        source, src_mask, english, en_mask = text_pairs
        n, device = source.shape[0], source.device
        pick = images[torch.randint(len(images), (n,), device=device)]
        img = image_states[pick, : self.spec.num_query_tokens]
        task = torch.where(torch.rand(n, device=device) < 0.5, QUS, MATCH)
        student = self._next_token_logits(img, source, src_mask, task)
        with torch.no_grad():
            teacher = self._next_token_logits(img.detach(), english, en_mask, task)
        return F.kl_div(
            F.log_softmax(student, dim=-1),
            F.log_softmax(teacher, dim=-1),
            log_target=True,
            reduction="batchmean",
        )

    @staticmethod
    def _sentence_alignment(text_pairs) -> torch.Tensor:
        """MSE between each text pair's averaged source-side XLM-R states and its English side's
        (held fixed), as multilingual sentence encoders are distilled: what reads the averaged
        states (the contrastive space, MaRVL's image gate) after English-only fine-tuning then
        reads the other languages alike. A text encoder that maps every sentence to one point also
        meets it, which the other losses forbid only up to a weight (see the demo spec's
        `model.epsilon_sent`)."""
        source, src_mask, english, en_mask = text_pairs
        return F.mse_loss(_mean_pool(source, src_mask).float(), _mean_pool(english, en_mask).float())

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Losses of a `collate` batch (see the module docstring)."""
        task = batch["task"]
        single = batch["pixel_values"].dim() == 4
        itc_rows = batch["has_image"] & batch["has_caption"] & single
        group, image_states, mixing = self._primary_rows(batch, extra_image_rows=itc_rows)
        groups, row_task = [group], [task]
        zero = self.temperature.sum() * 0.0
        loss_itc = zero
        itc_index = _index(batch, "rows_itc", itc_rows)
        # with several ranks every rank joins the contrastive gathers, with or without rows of its own
        if image_states is not None and (itc_index.numel() or distributed()):
            image_cls = self._image_cls(image_states.index_select(0, itc_index))
            itc_mask = batch["itc_mask"].index_select(0, itc_index)
            text_states = self._encode_rows(batch["itc_ids"].index_select(0, itc_index), itc_mask)
            text_cls = self._text_cls(text_states, itc_mask)
            temperature = self.temperature.clamp(*self.spec.temperature_range)
            loss_itc = contrastive_loss(image_cls, text_cls, temperature)
            match = self._match_rows(batch, image_states, itc_index, image_cls, text_states, text_cls)
            if match is not None:
                groups.append(match)
                row_task.append(torch.full((match[0].shape[0],), MATCH, device=task.device))
        embeds, mask, labels = _pad_cat(groups)
        logp, counts = self._token_logprobs(embeds, mask, labels)
        if mixing is not None:
            n = group[0].shape[0]
            mixed, tokens = self._mixture(logp[:n], counts[:n], mixing, task.shape[0])
            logp, counts = torch.cat([mixed, logp[n:]]), torch.cat([tokens, counts[n:]])
        row_task = torch.cat(row_task)
        losses = {}
        for name, t in TASK_IDS.items():  # weights, not a selection: nothing here waits on the device
            sel = (row_task == t).to(logp.dtype)
            losses[f"loss_{name}"] = -(logp * sel).sum() / (counts * sel).sum().clamp(min=1)
        loss = (
            losses["loss_trans"]
            + losses["loss_cap"]
            + self.spec.alpha_qus * losses["loss_qus"]
            + self.spec.beta_match * losses["loss_match"]
            + self.spec.gamma_itc * loss_itc
        )
        out = {}
        consistency = bool(self.spec.delta_xlc) and image_states is not None
        text_pairs = self._text_pairs(batch) if consistency or self.spec.epsilon_sent else None
        if consistency and text_pairs is not None:
            encoded = (_isin(task, USES_IMAGE) & batch["has_image"]) | itc_rows
            images = _index(batch, "rows_image", encoded)
            loss_xlc = self._consistency(text_pairs, image_states, images)
            if loss_xlc is not None:
                loss = loss + self.spec.delta_xlc * loss_xlc
                out["loss_xlc"] = loss_xlc
        if self.spec.epsilon_sent and text_pairs is not None:
            out["loss_sent"] = self._sentence_alignment(text_pairs)
            loss = loss + self.spec.epsilon_sent * out["loss_sent"]
        rows = torch.bincount(row_task, minlength=len(TASK_IDS))  # [match] rows include derived ones
        return {
            "loss": loss,
            **losses,
            "loss_itc": loss_itc,
            **out,
            "tokens": counts.sum(),
            "task_rows": rows,
        }

    @staticmethod
    def loss_presence(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss with whether the forward measured it (a 0-d bool on the device): a task with no
        rows in the batch (derived [match] rows included) returns a zero placeholder."""
        measured = out["task_rows"] > 0
        tasks = {f"loss_{t}": i for t, i in TASK_IDS.items()}
        return {
            k: measured[tasks[k]] if k in tasks else torch.ones((), dtype=torch.bool, device=v.device)
            for k, v in out.items()
            if k.startswith("loss_")
        }

    @functools.cached_property
    def _flop_count(self) -> UniGenFlops:
        return UniGenFlops(self)

    def train_flops(self, batch: dict) -> float:
        """Training FLOPs of a host batch, for MFU (mvlp_core/model/unigen/flops.py)."""
        return self._flop_count(batch)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query states [B, K*Q, Dq] (Q per image), image [CLS] [B, E] L2-normalised; for K images
        the normalised mean of their [CLS])."""
        pixels = pixel_values if pixel_values.dim() == 5 else pixel_values.unsqueeze(1)
        b, k = pixels.shape[:2]
        states = self.image_encoder(pixels.flatten(0, 1))
        cls = self._image_cls(states).view(b, k, -1).mean(dim=1)
        return states.reshape(b, k * states.shape[1], -1), F.normalize(cls, dim=-1)

    def itc_temperature(self) -> float:
        """The InfoNCE temperature in use: feature similarity / it = the contrastive logit."""
        return float(self.temperature.clamp(*self.spec.temperature_range))

    @torch.no_grad()
    def text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Text features [B, E], L2-normalised (the contrastive space)."""
        return self._text_cls(self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

    @torch.no_grad()
    def score_targets(self, batch: dict) -> torch.Tensor:
        """Sum of log-probs [B] of each example's target (eos included) given its prompt; the task
        token comes from batch["task"]."""
        group, _, mixing = self._primary_rows(batch)
        logp, counts = self._token_logprobs(*group)
        return logp if mixing is None else self._mixture(logp, counts, mixing, batch["task"].shape[0])[0]

    @torch.no_grad()
    def match_score(self, pixel_values: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[match]: log p("yes") − log p("no") [B] for each image (or image set) with its text."""
        b = ids.shape[0]
        base = {
            "task": torch.full((b,), MATCH, device=ids.device),
            "pixel_values": pixel_values,
            "has_image": torch.ones(b, dtype=torch.bool, device=ids.device),
            "enc_ids": ids,
            "enc_mask": mask,
        }
        scores = []
        for answer in (self.yes_ids, self.no_ids):
            target = torch.tensor(answer + [self.tokenizers.decoder.eos_token_id], device=ids.device)
            dec_ids = target.expand(b, -1)
            dec_mask = torch.ones_like(dec_ids)
            scores.append(self.score_targets({**base, "dec_ids": dec_ids, "dec_mask": dec_mask}))
        return scores[0] - scores[1]

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 16) -> list[str]:
        """Greedy decoding after each example's prompt (its target is ignored)."""
        b = batch["task"].shape[0]
        empty = batch["dec_ids"][:, :0]
        (embeds, mask, _), _, mixing = self._primary_rows(
            {**batch, "dec_ids": empty, "dec_mask": empty, "labels": None}
        )
        if mixing is not None:
            raise ValueError(
                "generate reads one image per example; rank label words with "
                "score_targets for several images (MaRVL)"
            )
        lengths = mask.sum(dim=1)
        embeds = F.pad(embeds, (0, 0, 0, max_new_tokens))
        mask = F.pad(mask, (0, max_new_tokens))
        eos = self.tokenizers.decoder.eos_token_id
        out = torch.full((b, max_new_tokens), eos, device=embeds.device)
        done = torch.zeros(b, dtype=torch.bool, device=embeds.device)
        rows = torch.arange(b, device=embeds.device)
        for step in range(max_new_tokens):
            width = int(lengths.max())
            hidden = self.decoder.transformer(
                inputs_embeds=embeds[:, :width], attention_mask=mask[:, :width]
            ).last_hidden_state
            logits = self.decoder.lm_head(hidden[rows, lengths - 1])
            token = logits.argmax(dim=-1).masked_fill(done, eos)
            out[:, step] = token
            done |= token == eos
            if done.all():
                break
            embeds[rows, lengths] = self.decoder.transformer.wte(token).to(embeds.dtype)
            mask[rows, lengths] = 1
            lengths = lengths + 1
        decode = self.tokenizers.decoder.decode
        return [
            decode([t for t in row.tolist() if t != eos], skip_special_tokens=True).strip() for row in out
        ]

    # ---------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str | Path) -> None:
        """Weights (safetensors), config (spec + sub-model configs) and both tokenizers."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizers.save(folder)
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_model(self, str(tmp))
        write_json(folder / CONFIG_FILE, self.config)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> UniGen:
        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists():
            raise StageError(
                f"{folder} is not a UniGen checkpoint (no {CONFIG_FILE}); give a folder"
                " written by UniGen.save_pretrained, e.g. pretrain/final"
            )
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        config["spec"] = upgrade_saved(config["spec"])
        model = cls(config, load_tokenizers(folder))
        load_weights(model, folder / WEIGHTS_FILE)
        return model


def _fuse_gelu(decoder: nn.Module) -> None:
    """GPT-2's `gelu_new` as one op: the same tanh approximation of GELU, which transformers'
    NewGELUActivation writes as six tensor ops (each with its backward) and `F.gelu(approximate=
    "tanh")` computes in one kernel. The outputs agree to float rounding; the saved config keeps
    `gelu_new`, so checkpoints are unchanged and GPT-2's own load alike."""
    for module in decoder.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = ACT2FN["gelu_pytorch_tanh"]


def upgrade_saved(raw: dict[str, Any]) -> dict[str, Any]:
    """A model section saved with an older checkpoint, as it was trained: without `itc_text` its
    contrastive text feature was the averaged states; before the named sizes its `tiny` dimensions
    become `dims` of size small (the former tiny was RandomDims' defaults)."""
    raw = {"itc_text": "mean", **raw}
    if "tiny" not in raw:
        return raw
    raw = {**raw, "dims": raw["tiny"]}
    del raw["tiny"]
    if raw.get("size") == "tiny":
        raw["size"] = "small"
    return raw


def load_model(folder: str | Path) -> UniGen:
    """The model (with its tokenizers) from a folder written by `UniGen.save_pretrained`."""
    return UniGen.from_pretrained(folder)


def _answer_ids(tokenizers: Tokenizers, word: str) -> list[int]:
    return tokenizers.decoder(word, add_special_tokens=False)["input_ids"]


def _json(config) -> dict:
    return json.loads(config.to_json_string(use_diff=False))


def _random_parts(spec: ModelSpec, tokenizers: Tokenizers) -> tuple[dict, dict]:
    t = spec.dims
    text = XLMRobertaConfig(
        vocab_size=len(tokenizers.encoder),
        num_hidden_layers=t.text_layers,
        **tower_width(t),
        max_position_embeddings=t.max_positions + 2,
        type_vocab_size=1,
        pad_token_id=tokenizers.encoder.pad_token_id,
        **dict.fromkeys(("hidden_dropout_prob", "attention_probs_dropout_prob"), 0.0),
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizers.decoder),
        n_embd=t.hidden_size,
        n_layer=t.decoder_layers,
        n_head=t.num_heads,
        n_inner=t.intermediate_size,
        n_positions=t.max_positions,
        **dict.fromkeys(("bos_token_id", "eos_token_id"), tokenizers.decoder.eos_token_id),
        **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), 0.0),
    )
    return _json(text), _json(decoder)


def base_shaped_configs(spec: ModelSpec, tokenizers: Tokenizers) -> tuple[dict, dict, dict, dict]:
    """The published shapes of the base parts (BLIP-2 ViT-g + Q-Former, xlm-roberta-base, gpt2),
    for random-weight benchmarks (MFU on a GPU) where no checkpoint is at hand."""
    from transformers import Blip2QFormerConfig, Blip2VisionConfig

    vision = Blip2VisionConfig(
        hidden_size=1408,
        intermediate_size=6144,
        num_hidden_layers=39,
        num_attention_heads=16,
        image_size=spec.image_size,
        patch_size=14,
    )
    qformer = Blip2QFormerConfig(encoder_hidden_size=1408)  # 768 wide, 12 layers, cross-attn every 2nd
    text = XLMRobertaConfig(
        vocab_size=max(250002, len(tokenizers.encoder)),
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tokenizers.encoder.pad_token_id,
    )
    decoder = GPT2Config(vocab_size=max(50257 + len(TASK_IDS), len(tokenizers.decoder)))
    return _json(vision), _json(qformer), _json(text), _json(decoder)


def build_model(spec: ModelSpec, tokenizers: Tokenizers) -> UniGen:
    """tiny: random weights from the spec's dims. base: BLIP-2 ViT + Q-Former, XLM-R and GPT-2 from
    their checkpoints (name or path); `weights: random` gives base shapes with random weights.
    With `spec.checkpoint` set, that UniGen checkpoint is loaded instead (with its own tokenizers:
    use `model.tokenizers`)."""
    if spec.checkpoint:
        return load_model(spec.checkpoint)
    parts: dict[str, nn.Module] = {}
    if spec.size == "base" and spec.weights == "random":
        vision, qformer, text, decoder = base_shaped_configs(spec, tokenizers)
        embed_dim = spec.embed_dim
    elif spec.size != "base":
        vision, qformer = random_configs(spec)
        text, decoder = _random_parts(spec, tokenizers)
        embed_dim = spec.dims.embed_dim
    else:
        parts["image_encoder"] = load_blip2_encoder(spec.vision, spec.num_query_tokens)
        parts["text_encoder"] = from_pretrained(
            XLMRobertaModel, spec.text_encoder, "text_encoder", add_pooling_layer=False
        )
        gpt2 = from_pretrained(GPT2LMHeadModel, spec.decoder, "decoder")
        gpt2.resize_token_embeddings(len(tokenizers.decoder))
        parts["decoder"] = gpt2
        vision = _json(parts["image_encoder"].vision_model.config)
        qformer = _json(parts["image_encoder"].qformer.config)
        text = _json(parts["text_encoder"].config)
        decoder = _json(gpt2.config)
        embed_dim = spec.embed_dim
    config = {
        "family": "unigen",
        "spec": spec.model_dump(mode="json"),
        "vision_config": vision,
        "qformer_config": qformer,
        "text_config": text,
        "decoder_config": decoder,
        "embed_dim": embed_dim,
        "task_token_ids": tokenizers.task_token_ids(),
        "yes_ids": _answer_ids(tokenizers, "yes"),
        "no_ids": _answer_ids(tokenizers, "no"),
    }
    return UniGen(config, tokenizers, parts)
