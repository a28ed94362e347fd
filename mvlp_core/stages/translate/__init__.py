"""translate stage: English captions of downloaded samples -> captions in each target language."""

from mvlp_core.stages.translate.stage import STAGE

__all__ = ["STAGE"]
