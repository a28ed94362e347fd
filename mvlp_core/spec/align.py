"""The align stage's section: eflomal, priors, dictionaries, gold alignments."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mvlp_core.spec.base import Strict, perf_only


class PriorCorpus(Strict):
    """A large en–xx parallel corpus (one sentence per line) to learn eflomal priors from."""

    src: str = Field(description="English side")
    tgt: str = Field(description="the other language's side, line-parallel")
    pretokenized: bool = Field(False, description="split on spaces instead of mvlp's tokenizers")
    limit: int | None = Field(None, gt=0, description="read at most this many lines")


class AlignSpec(Strict):
    model: Literal[1, 2, 3] = 3
    symmetrize: Literal["grow-diag-final-and"] = "grow-diag-final-and"
    gold: str | None = Field(None, description="gold alignments (jsonl) to report AER against")
    chunk_size: int = Field(
        100_000, gt=0, description="pairs per unit; a language is aligned in chunks of this size"
    )
    priors: str = Field(
        "learn",
        description="learn (from prior_corpus, else from the stage's own pairs when a language "
        "has several chunks) | none (every chunk blind) | path of an eflomal priors file, "
        "{lang} replaced by the language",
    )
    prior_pairs: int = Field(
        200_000, gt=0, description="at most this many pairs feed the first (prior-learning) pass"
    )
    prior_corpus: dict[str, PriorCorpus] = Field(
        {}, description="language -> parallel corpus to learn that language's priors from"
    )
    dictionary_min_count: int = Field(
        2, gt=0, description="bilingual dictionary: keep word pairs aligned at least this often"
    )
    dictionary_min_prob: float = Field(
        0.1, gt=0, le=1, description="bilingual dictionary: keep pairs with p(xx | en) >= this"
    )
    workers: int = perf_only(1, gt=0, le=256, description="processes aligning chunks in parallel")

    @field_validator("priors")
    @classmethod
    def _priors_mode(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("priors: give learn, none or the path of an eflomal priors file")
        return value
