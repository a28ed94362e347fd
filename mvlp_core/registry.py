"""Every stage of the DAG, in DAG order. A stage is its module's `STAGE` descriptor
(`mvlp_core.stage.Stage`) plus one line here; the DAG, the flows, the CLI and the artifacts read
this tuple, so nothing else needs to know the stage."""

from __future__ import annotations

from mvlp_core.stage import Stage
from mvlp_core.stages import (
    align,
    download,
    iglue_eval,
    ingest,
    pretrain,
    qa,
    report,
    shard,
    text_shard,
    translate,
)

STAGES: tuple[Stage, ...] = (
    ingest.STAGE,
    download.STAGE,
    translate.STAGE,
    align.STAGE,
    qa.STAGE,
    shard.STAGE,
    text_shard.STAGE,
    pretrain.STAGE,
    iglue_eval.STAGE,
    report.STAGE,
)
