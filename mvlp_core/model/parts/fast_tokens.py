"""Batch tokenisation for the training loaders, through the Rust tokenizer directly.

A Hugging Face fast tokenizer's `__call__` configures its Rust backend, calls `encode_batch` (which
also computes every token's character offsets) and converts each encoding in Python; for a
loader batch of short captions that is about 1.6x the time of the backend's `encode_batch_fast`
(no offsets: the loaders never read them). These functions set the same truncation and padding
the call `tokenizer(texts, padding=True, truncation=True, max_length=n)` would set, on the same
backend (each `__call__` sets what it needs again), and return the same ids, masks and special
tokens mask (`tests/unit/test_fast_tokens.py`).
"""

from __future__ import annotations

import numpy as np


def encodings(
    tokenizer, texts: list[str], max_length: int, *, pad: bool, add_special_tokens: bool = True
) -> list:
    """The backend's `Encoding`s of `texts`, truncated to `max_length` tokens (special tokens
    included, longest-first, on the tokenizer's truncation side) and, with `pad`, padded to the
    longest on the tokenizer's padding side."""
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(
        max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side
    )
    if pad:
        backend.enable_padding(
            direction=tokenizer.padding_side,
            pad_id=tokenizer.pad_token_id,
            pad_type_id=tokenizer.pad_token_type_id,
            pad_token=tokenizer.pad_token,
        )
    else:
        backend.no_padding()
    return backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)


def padded(tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) as int64 [N, longest]: `tokenizer(texts, padding=True,
    truncation=True, max_length=max_length, return_tensors="np")`'s."""
    found = encodings(tokenizer, texts, max_length, pad=True)
    return (
        np.array([e.ids for e in found], dtype=np.int64),
        np.array([e.attention_mask for e in found], dtype=np.int64),
    )
