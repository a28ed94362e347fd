"""The pipeline spec: one YAML file, every section."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from mvlp_core import storage
from mvlp_core.languages import SUPPORTED_LANGUAGES
from mvlp_core.spec.align import AlignSpec
from mvlp_core.spec.base import Strict, perf_only
from mvlp_core.spec.data import DatasetRef, DownloadSpec, IngestSpec, ShardSpec
from mvlp_core.spec.execution import ExecutionSpec
from mvlp_core.spec.iglue import IglueSpec
from mvlp_core.spec.model import ModelSpec
from mvlp_core.spec.models import AnyModelSpec, NamedModel, inherit, merged, with_family
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
    model: AnyModelSpec = Field(
        default_factory=ModelSpec, description="the model, keyed by family (default unigen)"
    )
    models: list[NamedModel] | None = Field(
        None,
        min_length=1,
        description="several models trained and evaluated on the same data, each named (replaces"
        " `model`): [{name: unigen, family: unigen, size: tiny}, {name: wsmvlp, family: wsmvlp}]",
    )
    text: TextSpec = TextSpec()
    publish: PublishSpec = PublishSpec()
    execution: ExecutionSpec = perf_only(ExecutionSpec())
    schedule: str | None = perf_only(
        None,
        pattern=rf"^\s*{CRON_FIELD}(\s+{CRON_FIELD}){{4}}\s*$",
        description="cron (5 fields) for the deployments `mvlp deploy` registers; none: run on demand",
    )
    timezone: str = perf_only("UTC", description="time zone of `schedule`")

    @model_validator(mode="before")
    @classmethod
    def _entries_start_from_model(cls, raw: Any) -> Any:
        """A `models` entry of the `model` section's family starts from that section: the fields it
        writes replace the section's (one place for settings two entries share, and `--set
        model.x=...` reaches them)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
            return raw
        base = with_family(raw.get("model") or {})
        return {**raw, "models": [inherit(base, e) for e in raw["models"]]}

    @field_validator("model", mode="before")
    @classmethod
    def _model_family(cls, raw: Any) -> Any:
        return with_family(raw)

    @field_validator("models")
    @classmethod
    def _distinct_names(cls, models: list[NamedModel] | None) -> list[NamedModel] | None:
        names = [m.name for m in models or []]
        if len(set(names)) != len(names):
            raise ValueError(f"models: names must be distinct, got {names}")
        return models

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

    @model_validator(mode="after")
    def _model_pretrain_fields(self) -> PipelineSpec:
        for m in self.models or []:
            for section, given, cls in (
                ("pretrain", m.pretrain, PretrainSpec),
                ("iglue", m.iglue, IglueSpec),
            ):
                unknown = sorted(set(given) - set(cls.model_fields))
                if unknown:
                    raise ValueError(f"models[{m.name}].{section}: unknown field(s) {unknown}")
        self.trained_models()  # each model's pretrain section validates
        return self

    def trained_models(self) -> list[tuple[str | None, PipelineSpec]]:
        """(name, the spec that model trains and is evaluated with): one unnamed entry for `model`;
        with `models`, one per entry, its model in `model`, its pretrain and iglue fields merged into
        the shared sections, its Ray Train run named after it."""
        if not self.models:
            return [(None, self)]
        runs = []
        for m in self.models:
            pretrain = PretrainSpec.model_validate(
                merged(
                    self.pretrain.model_dump(),
                    {**m.pretrain, "run_name": f"{self.pretrain.run_name}-{m.name}"},
                )
            )
            iglue = IglueSpec.model_validate(merged(self.iglue.model_dump(), m.iglue))
            update = {"model": m.model, "models": None, "pretrain": pretrain, "iglue": iglue}
            runs.append((m.name, self.model_copy(update=update)))
        return runs

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
