"""text-shard stage: parallel and monolingual text corpora -> text WebDataset shards with language
sampling weights."""

from mvlp_core.stages.text_shard.stage import config, run_text_shard

__all__ = ["config", "run_text_shard"]
