"""translate stage: English captions of downloaded samples -> captions in each target language."""

from mvlp_core.stages.translate.stage import run_translate

__all__ = ["run_translate"]
