"""qa stage: question–answer pairs extracted from each downloaded sample's English caption."""

from mvlp_core.stages.qa.stage import run_qa

__all__ = ["run_qa"]
