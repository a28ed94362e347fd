"""The pipeline spec: one YAML file, every section."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from mvlp_core import storage
from mvlp_core.languages import SUPPORTED_LANGUAGES
from mvlp_core.spec.align import AlignSpec
from mvlp_core.spec.base import Strict, perf_only
from mvlp_core.spec.data import DatasetRef, DownloadSpec, IngestSpec, ShardSpec
from mvlp_core.spec.execution import ExecutionSpec
from mvlp_core.spec.iglue import IglueSpec
from mvlp_core.spec.model import ModelSpec
from mvlp_core.spec.publish import PublishSpec
from mvlp_core.spec.qa import QASpec
from mvlp_core.spec.text import TextSpec
from mvlp_core.spec.train import PretrainSpec
from mvlp_core.spec.translate import TranslateSpec

CRON_FIELD = r"[0-9A-Za-z*/,?#LW-]+"


class PipelineSpec(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]+$")
    description: str = ""
    workdir: str = "runs/{name}"
    dataset: DatasetRef
    languages: list[str] = Field(min_length=1)
    ingest: IngestSpec = IngestSpec()
    download: DownloadSpec = DownloadSpec()
    translate: TranslateSpec = TranslateSpec()
    align: AlignSpec = AlignSpec()
    qa: QASpec = QASpec()
    shard: ShardSpec = ShardSpec()
    iglue: IglueSpec = IglueSpec()
    pretrain: PretrainSpec = PretrainSpec()
    model: ModelSpec = ModelSpec()
    text: TextSpec = TextSpec()
    publish: PublishSpec = PublishSpec()
    execution: ExecutionSpec = perf_only(ExecutionSpec())
    schedule: str | None = perf_only(
        None,
        pattern=rf"^\s*{CRON_FIELD}(\s+{CRON_FIELD}){{4}}\s*$",
        description="cron (5 fields) for the deployments `mvlp deploy` registers; none: run on demand",
    )
    timezone: str = perf_only("UTC", description="time zone of `schedule`")

    @field_validator("workdir")
    @classmethod
    def _posix_workdir(cls, workdir: str) -> str:
        problem = storage.workdir_problem(workdir)
        if problem:
            raise ValueError(problem)
        return workdir

    @model_validator(mode="after")
    def _published_source(self) -> PipelineSpec:
        if self.pretrain.loader.read_from == "published" and self.publish.shards is None:
            raise ValueError(
                "pretrain.loader.read_from is 'published' but publish.shards is not set; set it to "
                "the s3:// or gs:// prefix the shards are published to, or read_from: workdir"
            )
        return self

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, langs: list[str]) -> list[str]:
        bad = [code for code in langs if code not in SUPPORTED_LANGUAGES or code == "en"]
        if bad:
            raise ValueError(
                f"unsupported target language(s) {bad}; allowed: {', '.join(SUPPORTED_LANGUAGES)}"
                " (English is the source and is always present)"
            )
        return langs
