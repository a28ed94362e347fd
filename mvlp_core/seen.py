"""What a single pass over a large list has seen, in numpy arrays rather than Python objects.

Ingest judges each record's id and URL against every earlier record. A Python set of 3.3M URLs
costs ≈ 0.5 GB (≈ 2 GB for CC12M); here each seen item is one sorted 64-bit key and the row it
came from (16 bytes), and a block of records is judged with one vectorised search. URLs are keyed
by a 64-bit BLAKE2b digest: two distinct URLs share a key with probability ≈ n²/2⁶⁵ (≈ 4·10⁻⁶
for 12M URLs), in which case the later one is rejected as a duplicate of the earlier.
"""

from __future__ import annotations

import hashlib

import numpy as np


def digest(text: str) -> int:
    """A 64-bit key for `text` (BLAKE2b), as a non-negative int that fits uint64."""
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
    )


class Seen:
    """Sorted keys and, for each, the row that first had it."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.rows = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def judge(self, keys: list[int], rows: list[int]) -> list[int | None]:
        """For each (key, row) in order: None when the key is new (it is then remembered), else the
        row that had it first: earlier in this block, or in an earlier block."""
        block = np.array(keys, dtype=np.uint64)
        block_rows = np.array(rows, dtype=np.int64)
        earlier = np.full(len(block), -1, dtype=np.int64)
        if len(self.keys) and len(block):
            pos = np.minimum(np.searchsorted(self.keys, block), len(self.keys) - 1)
            hit = self.keys[pos] == block
            earlier[hit] = self.rows[pos[hit]]
        _, first, inverse = np.unique(block, return_index=True, return_inverse=True)
        within = first[inverse]  # the first position in the block holding each key
        repeat = (within != np.arange(len(block))) & (earlier < 0)
        earlier[repeat] = block_rows[within[repeat]]
        new = earlier < 0
        self._add(block[new], block_rows[new])
        return [None if e < 0 else int(e) for e in earlier]

    def _add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        keys, rows = keys[order], rows[order]
        at = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, at, keys)
        self.rows = np.insert(self.rows, at, rows)
