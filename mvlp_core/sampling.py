"""Language sampling weights for multilingual training: q_i ∝ p_i^α.

With p_i the share of language i in the data, α < 1 flattens the distribution so low-resource
languages are seen more often than their share (XLM-R, M³P and the weakly-supervised mVLP paper
use α = 0.3; α = 1 samples proportionally, α = 0 uniformly). The text-shard stage writes these
weights into its manifest; a trainer can recompute them for another α from the manifest's counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def canonical_pair(langs: Sequence[str]) -> str:
    """en-xx when English is a side, else alphabetical: en-de and de-en are one pair for sampling
    (the key of the text-shard manifest's pair counts and weights)."""
    return "-".join(sorted(langs, key=lambda lang: (lang != "en", lang)))


def sampling_weights(counts: Mapping[str, int], alpha: float = 0.3) -> dict[str, float]:
    """q_i = p_i^α / Σ_j p_j^α over the languages (or pairs) with a positive count.

    Languages with no samples get weight 0, so a trainer never draws from an empty stream.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"counts must be >= 0, got {dict(counts)}")
    total = sum(counts.values())
    if total == 0:
        return {lang: 0.0 for lang in counts}
    powered = {lang: (n / total) ** alpha if n else 0.0 for lang, n in counts.items()}
    norm = sum(powered.values())
    return {lang: p / norm for lang, p in powered.items()}
