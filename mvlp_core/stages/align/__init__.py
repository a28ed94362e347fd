"""The align stage: language-aware tokenization, eflomal word alignment, grow-diag-final-and."""

from mvlp_core.stages.align.stage import STAGE

__all__ = ["STAGE"]
