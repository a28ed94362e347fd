"""The `publish:` section: object-store prefixes the final shards are uploaded to."""

from __future__ import annotations

from pydantic import field_validator

from mvlp_core import storage
from mvlp_core.spec.base import Strict, perf_only


class PublishSpec(Strict):
    """Where the shard and text-shard stages' output goes once the stage is current: its tars,
    then its `_manifest.json` (last, so a prefix with a manifest is complete). Uploads skip
    objects already there with the same size and content; nothing is deleted. Publishing never
    changes a stage's output, so these fields are in no fingerprint."""

    shards: str | None = perf_only(
        None, description="s3://bucket/prefix or gs://bucket/prefix for shard-*.tar; None: not published"
    )
    text_shards: str | None = perf_only(
        None, description="s3://bucket/prefix or gs://bucket/prefix for text-*.tar; None: not published"
    )

    @field_validator("shards", "text_shards")
    @classmethod
    def _object_store(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not storage.is_object_store(value) or not storage.bucket(value):
            raise ValueError(
                "give an object-store prefix: s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (the shards "
                "stay in the workdir as well; publishing copies them)"
            )
        return value.rstrip("/")
