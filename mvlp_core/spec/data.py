"""The data stages' sections: the image–caption dataset, ingest (with the URL policy), download
and shard."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mvlp_core.spec.base import Strict, perf_only


class DatasetSpec(Strict):
    """An image–caption URL list (data_specs/datasets/NAME.yaml)."""

    name: str = Field(pattern=r"^[a-z0-9]+$", max_length=12)
    description: str = ""
    license: str = ""
    kind: Literal["url_list", "synthetic"] = "url_list"
    url_list: str
    format: Literal["tsv", "csv", "jsonl", "parquet"]
    header: bool = True
    columns: list[str] | None = None
    url_column: str = "url"
    caption_column: str = "caption"
    id_column: str | None = None
    url_prefix: str | None = None
    serve_locally: bool = False


class DatasetRef(Strict):
    ref: str | None = Field(None, description="name of data_specs/datasets/NAME.yaml or a path")
    spec: DatasetSpec | None = Field(None, description="inline dataset (filled from ref on load)")
    limit: int | None = Field(None, gt=0)
    samples: int = Field(240, gt=0, description="synthetic world only: number of images")
    seed: int = 0


class UrlPolicy(Strict):
    allow_loopback: bool = False
    allow_private: bool = False
    allow_link_local: bool = False
    allowed_ports: list[int] | None = Field(
        None, description="ports that may be fetched (None: any); e.g. [80, 443] on a crawl"
    )


class IngestSpec(Strict):
    shard_size: int = Field(1000, gt=0, le=1_000_000)
    dedup: Literal["url", "url+caption", "none"] = "url"
    max_caption_chars: int = Field(1000, gt=0, le=100_000)
    url_policy: UrlPolicy = UrlPolicy()


class DownloadSpec(Strict):
    image_size: int = Field(224, gt=0, le=4096, description="pixels per side (at most 4096)")
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "center_crop"
    encode_quality: int = Field(95, ge=1, le=100)
    min_image_size: int = Field(0, ge=0, le=4096)
    max_aspect_ratio: float | None = Field(None, ge=1, le=1000, description="None: any aspect ratio")
    timeout: float = Field(10, gt=0, le=600, description="seconds per request (at most 600)")
    retries: int = Field(1, ge=0, le=20)
    guard_fetch: bool = Field(
        True,
        description="check each request img2dataset makes (every redirect hop, every resolved "
        "address) against the URL policy",
    )
    max_image_pixels: int = Field(
        100_000_000,
        gt=0,
        le=2**30,
        description="images declaring more pixels are refused before decoding (at most 2^30, OpenCV's own cap)",
    )
    max_response_bytes: int = Field(
        50 * 2**20, gt=0, le=2**31, description="larger responses are refused or cut (at most 2 GiB)"
    )
    user_agent_token: str | None = Field(
        "img2dataset",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the crawler's name (img2dataset's user_agent_token, lower-cased): the User-Agent "
        "says `(compatible; TOKEN; +https://github.com/rom1504/img2dataset)`, and X-Robots-Tag "
        "directives addressed to it (`TOKEN: noai`) count besides unaddressed ones. Default: the "
        "tool that fetches, so opt-outs aimed at it hold; None sends a bare browser User-Agent and "
        "honours unaddressed directives only (img2dataset's own default)",
    )
    opt_out_directives: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,40}$")]] = Field(
        ["noai", "noimageai", "noindex", "noimageindex"],
        description="X-Robots-Tag directives that refuse an image (an `opt_out` reject; its body is "
        "not read): img2dataset's default disallowed_header_directives; [] honours none",
    )
    busy_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="a 429 or 503 answer is asked again up to this many times inside the fetch guard, "
        "after its Retry-After (seconds or an HTTP date; without one 1 s, 2 s, 4 s ...), never past "
        "the request's deadline; then the reject is http_429 or http_503",
    )
    max_retry_after: float = Field(
        60,
        ge=0,
        le=3600,
        description="seconds: the longest Retry-After waited for (a longer one ends the request at "
        "once, never retried sooner than asked); every request to a host that answered busy waits "
        "min(its Retry-After, this), or is rejected host_busy if that passes its own deadline",
    )
    processes: int = perf_only(2, gt=0, le=512)
    threads: int = perf_only(16, gt=0, le=1024)
    per_host_connections: int = perf_only(
        8,
        ge=1,
        le=1024,
        description="connections open at once to one host from one worker process (the host sees at "
        "most processes x this): 8, Scrapy's CONCURRENT_REQUESTS_PER_DOMAIN default, so a list "
        "dominated by one host does not put every thread on it; waiting for one counts against the "
        "request's deadline (host_busy when it would pass)",
    )
    per_host_requests_per_second: float | None = perf_only(
        None,
        gt=0,
        le=10_000,
        description="requests started per second to one host from one worker process; None: no "
        "rate limit, as in img2dataset and Scrapy by default: the connection limit and Retry-After "
        "pace a host, while a crawl delay of seconds per request (Nutch's, Heritrix's) would take "
        "about a week for a host that serves 100,000 of a list's images",
    )
    mirrors: dict[str, str] = perf_only(
        {}, description="URL prefix -> mirror prefix used at fetch time; records keep the original"
    )


class ShardSpec(Strict):
    samples_per_shard: int = Field(
        1000,
        gt=0,
        le=1_000_000,
        description="samples per tar at most: each download shard's samples are cut into tars of this many",
    )
    processes: int | None = perf_only(
        None,
        gt=0,
        le=512,
        description="worker processes writing units (download shards) at once; None: one per CPU "
        "this process may use (its affinity and cgroup quota: a pod's CPU limit), at most one per "
        "four units, since a worker starts in about the time four 1,000-sample units take; 1: all "
        "in the calling process",
    )
