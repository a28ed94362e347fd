"""The synthetic world: shapes, captions in six languages, gold alignments and IGLUE-format sets."""

from mvlp_core.synth.world import write_world

__all__ = ["write_world"]
