"""BERT/XLM-R building blocks the weakly-supervised and ERNIE-UniX² families share: a layer with a
pluggable cross-attention (and, for a decoder, causal self-attention), and XLM-R's masked-LM head.

`FusionLayer`: self-attention (bidirectional, or causal) → (optional) cross-attention → FFN, each sub-block
post-LN with a residual, as BERT/XLM-R (and the released code's `albef/modeling/xbert.py`). HF's
own layers cannot serve: `add_cross_attention` needs `is_decoder=True`, which turns a 2-D attention
mask causal. Parameter names are HF's (`attention.self.query`, `attention.output.LayerNorm`,
`intermediate.dense`, `output.dense`, ...), with the cross-attention under `crossattention.`, so an
HF XLM-R layer's state dict loads by name; the cross-attention then starts as a copy of the
layer's self-attention, as the paper (§4.1) and the released `utils/initialize_ckpt.py` do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

ATTENTION = "attention."
CROSS = "crossattention."


class _Heads(nn.Module):
    """Multi-head scaled dot-product attention of `hidden` over `memory` (itself for self-attention)."""

    def __init__(self, width: int, heads: int, kv_width: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(kv_width, width)
        self.value = nn.Linear(kv_width, width)

    def forward(
        self, hidden: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, causal: bool = False
    ) -> torch.Tensor:
        b, lq, d = hidden.shape
        lk = memory.shape[1]
        q = self.query(hidden).view(b, lq, self.heads, -1).transpose(1, 2)
        k = self.key(memory).view(b, lk, self.heads, -1).transpose(1, 2)
        v = self.value(memory).view(b, lk, self.heads, -1).transpose(1, 2)
        keep = memory_mask.bool()[:, None, None, :]
        if causal:  # position i reads positions <= i only
            keep = keep & torch.ones(lq, lk, dtype=torch.bool, device=keep.device).tril()
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(b, lq, d)


class _AddNorm(nn.Module):
    """dense → dropout → + residual → LayerNorm (BERT's "output" sub-blocks)."""

    def __init__(self, width_in: int, width: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, config, kv_width: int) -> None:
        super().__init__()
        width = config.hidden_size
        self.self = _Heads(width, config.num_attention_heads, kv_width, config.attention_probs_dropout_prob)
        self.output = _AddNorm(width, width, config.layer_norm_eps, config.hidden_dropout_prob)

    def forward(
        self, hidden: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, causal: bool = False
    ) -> torch.Tensor:
        return self.output(self.self(hidden, memory, memory_mask, causal), hidden)


class _Intermediate(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class FusionLayer(nn.Module):
    """One layer: self-attention → cross-attention (when built with it and given a memory) → FFN.

    `config` is an XLM-R (BERT-style) config: hidden_size, num_attention_heads, intermediate_size,
    hidden_act, layer_norm_eps and the two dropout rates. `kv_width` is the width of the states
    the cross-attention reads (image patches or the other sentence's states; default hidden_size).
    `causal`: the self-attention reads earlier positions only (a decoder layer).
    """

    def __init__(
        self, config, cross_attention: bool = False, kv_width: int | None = None, causal: bool = False
    ) -> None:
        super().__init__()
        self.causal = causal
        self.attention = _Attention(config, config.hidden_size)
        self.crossattention = _Attention(config, kv_width or config.hidden_size) if cross_attention else None
        self.intermediate = _Intermediate(config)
        self.output = _AddNorm(
            config.intermediate_size, config.hidden_size, config.layer_norm_eps, config.hidden_dropout_prob
        )

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden [B, L, D] with mask [B, L] (1 = token); memory [B, M, Dk] with memory_mask [B, M],
        or None to skip the cross-attention (the pluggable part: monolingual text)."""
        hidden = self.attention(hidden, hidden, mask, self.causal)
        if memory is not None:
            if self.crossattention is None:
                raise ValueError("this layer has no cross-attention; it cannot attend to a memory")
            hidden = self.crossattention(hidden, memory, memory_mask)
        return self.output(self.intermediate(hidden), hidden)

    def init_cross_from_self(self) -> None:
        """Copy the self-attention's weights into the cross-attention (paper §4.1)."""
        if self.crossattention is None:
            return
        own = self.attention.state_dict()
        cross = self.crossattention.state_dict()
        if any(cross[k].shape != v.shape for k, v in own.items()):
            raise ValueError("the cross-attention reads another width; it cannot start as the self-attention")
        self.crossattention.load_state_dict(own)

    def load_hf_layer(self, state: dict[str, torch.Tensor]) -> None:
        """Load an HF XLM-R/BERT layer's state dict (`XLMRobertaLayer.state_dict()`) by name; the
        cross-attention, if any, from the same layer's self-attention."""
        state = dict(state)
        if self.crossattention is not None:
            state.update(
                {CROSS + k[len(ATTENTION) :]: v for k, v in state.items() if k.startswith(ATTENTION)}
            )
        self.load_state_dict(state, strict=True)


class MLMHead(nn.Module):
    """XLM-R's LM head: dense → gelu → LayerNorm → decoder (weight tied to the word embeddings) + bias."""

    def __init__(self, config, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.decoder.weight = word_embeddings.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(hidden))))

    def load_hf_head(self, state: dict[str, torch.Tensor]) -> None:
        """From `XLMRobertaForMaskedLM.lm_head.state_dict()` (its `bias` is the decoder's bias; the
        decoder weight is the word embeddings, loaded with them)."""
        with torch.no_grad():
            for name in ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias"):
                self.get_parameter(name).copy_(state[name])
            self.decoder.bias.copy_(state.get("bias", state.get("decoder.bias")))
