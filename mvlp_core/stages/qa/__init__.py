"""qa stage: question–answer pairs extracted from each downloaded sample's English caption."""

from mvlp_core.stages.qa.stage import STAGE

__all__ = ["STAGE"]
