"""text-shard stage: parallel and monolingual text corpora -> text WebDataset shards with language
sampling weights."""

from mvlp_core.stages.text_shard.stage import STAGE

__all__ = ["STAGE"]
