"""Pipeline specs: one YAML file per pipeline, validated by pydantic models with messages that
name the field, the value and what is allowed.

The pipeline spec and its loader live in `pipeline` and `loader`; each stage's section lives in a
module per area (`data`: dataset, ingest, download, shard; `translate`; `align`; `qa`; `text`;
`model`; `train`; `iglue`; `publish`: object-store prefixes the shards go to; `execution`: where
each stage runs; `endpoint`: an OpenAI-compatible server). A spec is data (safe-loaded YAML). Fields that only change speed, not output, are
`perf_only` and left out of stage fingerprints.
"""

from mvlp_core.spec.align import AlignSpec, PriorCorpus
from mvlp_core.spec.base import SPECS_ROOT, SpecError, Strict, fingerprint_config, perf_only
from mvlp_core.spec.data import DatasetRef, DatasetSpec, DownloadSpec, IngestSpec, ShardSpec, UrlPolicy
from mvlp_core.spec.endpoint import EndpointSpec
from mvlp_core.spec.execution import ExecutionSpec, RayJobSpec
from mvlp_core.spec.iglue import IGLUE_TASKS, IglueFinetuneSpec, IglueFinetuneTaskSpec, IglueSpec
from mvlp_core.spec.loader import load_dataset, load_spec, parse_override, read_yaml, set_path
from mvlp_core.spec.model import SIZES, ModelSpec, RandomDims
from mvlp_core.spec.pipeline import PipelineSpec
from mvlp_core.spec.publish import PublishSpec
from mvlp_core.spec.qa import HFQASpec, HTTPQASpec, QASpec, VLLMQASpec
from mvlp_core.spec.text import TextCorpusSpec, TextSpec
from mvlp_core.spec.train import LoaderSpec, MixSpec, PretrainSpec
from mvlp_core.spec.translate import (
    CT2TranslateSpec,
    HFTranslateSpec,
    HTTPTranslateSpec,
    ImportSpec,
    LengthRatio,
    TranslateFilters,
    TranslateRaySpec,
    TranslateSpec,
)

__all__ = [
    "IGLUE_TASKS",
    "SIZES",
    "SPECS_ROOT",
    "AlignSpec",
    "CT2TranslateSpec",
    "DatasetRef",
    "DatasetSpec",
    "DownloadSpec",
    "EndpointSpec",
    "ExecutionSpec",
    "HFQASpec",
    "HFTranslateSpec",
    "HTTPQASpec",
    "HTTPTranslateSpec",
    "IglueFinetuneSpec",
    "IglueFinetuneTaskSpec",
    "IglueSpec",
    "ImportSpec",
    "IngestSpec",
    "LengthRatio",
    "LoaderSpec",
    "MixSpec",
    "ModelSpec",
    "PipelineSpec",
    "PretrainSpec",
    "PriorCorpus",
    "PublishSpec",
    "QASpec",
    "RandomDims",
    "RayJobSpec",
    "ShardSpec",
    "SpecError",
    "Strict",
    "TextCorpusSpec",
    "TextSpec",
    "TranslateFilters",
    "TranslateRaySpec",
    "TranslateSpec",
    "UrlPolicy",
    "VLLMQASpec",
    "fingerprint_config",
    "load_dataset",
    "load_spec",
    "parse_override",
    "perf_only",
    "read_yaml",
    "set_path",
]
