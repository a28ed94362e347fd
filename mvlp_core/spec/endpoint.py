"""One OpenAI-compatible HTTP endpoint (a vLLM or llama.cpp server, a hosted API): where it is and
how hard to try. translate.http and qa.http extend it with what they ask of it.

Where, not what: the address, the key's variable and the retry and rate settings never change a
stage's output, so they are not fingerprinted; the model and the sampling settings are.
"""

from __future__ import annotations

from pydantic import Field

from mvlp_core.spec.base import Strict, perf_only


class EndpointSpec(Strict):
    base_url: str = perf_only(
        ...,
        description="the server's base URL: ending in /v1 for OpenAI-compatible servers, the "
        "server root for LibreTranslate; moving the server does not recompute the stage",
    )
    model: str | None = Field(None, description="the model name the server serves")
    api_key_env: str | None = perf_only(
        None, description="NAME of the environment variable that holds the API key (never the key)"
    )
    timeout: float = perf_only(60.0, gt=0, le=3600, description="seconds per request (at most an hour)")
    max_retries: int = perf_only(5, ge=0, le=100)
    backoff_base: float = perf_only(
        1.0, ge=0, le=3600, description="first retry delay in seconds, doubled each try"
    )
    backoff_max: float = perf_only(60.0, ge=0, le=86400)
    requests_per_second: float | None = perf_only(None, gt=0)
    concurrency: int = perf_only(8, gt=0, le=1024, description="requests in flight at once")
