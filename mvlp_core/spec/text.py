"""The text-shard stage's section: parallel and monolingual text corpora."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mvlp_core.languages import SUPPORTED_LANGUAGES
from mvlp_core.spec.base import Strict


class TextCorpusSpec(Strict):
    """One text corpus: parallel (WikiMatrix TSV or Moses line-aligned files) or monolingual
    (one sentence per line). Each language (monolingual) or pair (parallel) is one stream, read
    from `path` with its placeholders filled in, or from `paths[stream]` where given."""

    name: str = Field(pattern=r"^[a-z0-9]+$", max_length=12, description="key prefix")
    kind: Literal["parallel", "monolingual"]
    format: Literal["wikimatrix", "moses", "lines"]
    path: str | None = Field(
        None,
        description="file (local or fsspec URL, .gz/.xz/.bz2 inferred); placeholders: {lang} for "
        "monolingual and moses (one file per side), {src} {tgt} {pair} for wikimatrix",
    )
    paths: dict[str, str] = Field({}, description="per-stream override of path: lang or src-tgt -> path")
    languages: list[str] = Field([], description="monolingual: one stream per language")
    pairs: list[str] = Field([], description="parallel: one stream per pair src-tgt, in column/file order")
    min_score: float | None = Field(
        None, description="wikimatrix only: margin-score threshold (1.04-1.06 in the LASER papers)"
    )
    min_words: int = Field(
        1, ge=1, description="per side; ja/zh count the align stage's words (MeCab, jieba)"
    )
    max_words: int | None = Field(None, gt=0)
    min_chars: int = Field(1, ge=1)
    max_chars: int | None = Field(None, gt=0)
    max_length_ratio: float | None = Field(None, ge=1, description="parallel: longer/shorter side in words")
    dedup: Literal["none", "exact", "normalised"] = "exact"
    limit: int | None = Field(None, gt=0, description="input lines read per stream")

    @model_validator(mode="after")
    def _consistent(self) -> TextCorpusSpec:
        allowed = {"parallel": ("wikimatrix", "moses"), "monolingual": ("lines",)}[self.kind]
        if self.format not in allowed:
            raise ValueError(
                f"format {self.format!r} does not fit kind {self.kind!r}; allowed: {', '.join(allowed)}"
            )
        if self.kind == "monolingual":
            if not self.languages or self.pairs:
                raise ValueError("a monolingual corpus lists `languages` (not `pairs`)")
            streams = self.languages
        else:
            if not self.pairs or self.languages:
                raise ValueError("a parallel corpus lists `pairs` like en-de (not `languages`)")
            streams = self.pairs
        bad = [s for s in streams for code in s.split("-") if code not in SUPPORTED_LANGUAGES]
        bad += [s for s in self.pairs if len(s.split("-")) != 2 or len(set(s.split("-"))) != 2]
        if bad:
            raise ValueError(
                f"bad language or pair {sorted(set(bad))}; pairs are src-tgt of two different codes "
                f"from: {', '.join(SUPPORTED_LANGUAGES)}"
            )
        if len(set(streams)) != len(streams):
            raise ValueError(f"repeated streams in {streams}")
        if self.min_score is not None and self.format != "wikimatrix":
            raise ValueError("min_score applies only to format wikimatrix (the only one with scores)")
        if self.max_length_ratio is not None and self.kind != "parallel":
            raise ValueError("max_length_ratio applies only to parallel corpora")
        if self.max_words is not None and self.max_words < self.min_words:
            raise ValueError(f"max_words {self.max_words} < min_words {self.min_words}")
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(f"max_chars {self.max_chars} < min_chars {self.min_chars}")
        unknown = sorted(set(self.paths) - set(streams))
        if unknown:
            raise ValueError(f"paths has keys {unknown} that are not streams of this corpus ({streams})")
        missing = [s for s in streams if s not in self.paths and self.path is None]
        if missing:
            raise ValueError(f"no path for {missing}: give `path` (a template) or `paths`")
        marks = ("{lang}",) if self.kind == "monolingual" else ("{src}", "{tgt}", "{pair}")
        if self.format == "moses":
            lacking = [s for s in streams if "{lang}" not in self.paths.get(s, self.path)]
            if lacking:
                raise ValueError(
                    f"moses paths need {{lang}} (the two sides are two files); {lacking} lack it"
                )
        else:
            shared = [s for s in streams if s not in self.paths]
            if len(shared) > 1 and not any(m in self.path for m in marks):
                raise ValueError(f"path serves {len(shared)} streams, so it needs one of {', '.join(marks)}")
        return self


class TextSpec(Strict):
    """Text-only corpora for the text-shard stage; no corpora: the stage writes an empty manifest."""

    corpora: list[TextCorpusSpec] = []
    samples_per_shard: int = Field(
        10000, gt=0, le=10_000_000, description="input lines per unit; each tar holds at most this many"
    )
    alpha: float = Field(0.3, ge=0, le=1, description="language sampling q_i ~ p_i^alpha (XLM-R, M3P: 0.3)")

    @field_validator("corpora")
    @classmethod
    def _unique_names(cls, corpora: list[TextCorpusSpec]) -> list[TextCorpusSpec]:
        names = [c.name for c in corpora]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"corpus names must be unique (they prefix keys); repeated: {dup}")
        return corpora
