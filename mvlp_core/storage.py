"""Object storage (s3://, gs://) for inputs and published shards, through fsspec (s3fs, gcsfs).

What may be remote: the URL list, the text corpora, and the prefixes the final shards are
published to and the training loader streams from (`publish:`, `pretrain.loader.read_from`). The
workdir never is: stages hand each other files in it, renamed into place and locked with flock,
so it is a POSIX path (a shared volume on a cluster), and a URL there is refused at load with
`WORKDIR_RULE`.

Credentials and endpoints come from where the clients look for them, never from the spec: for S3,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance or pod role) and
AWS_ENDPOINT_URL for an S3-protocol server other than AWS; for GCS, GOOGLE_APPLICATION_CREDENTIALS
or application-default credentials. A failure that no retry can fix (no credentials, access
denied, no such bucket, the endpoint unreachable after the client's own retries) is a
`contract.StageError`: one line naming the location, the cause and the fix. A missing object stays
a FileNotFoundError, which each caller names in its own words.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec

from mvlp_core import contract

REMOTE_SCHEMES = ("s3", "s3a", "gs", "gcs")
READ_BLOCK_BYTES = 16 * 2**20  # ranged GETs of a streamed object: sequential, never the whole object

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# pathlib collapses "s3://b/x" to "s3:/b/x": a workdir given as a Path still shows its scheme
_SCHEME_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")
_CREDENTIAL_ERRORS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "NoAuthTokenError",
    "DefaultCredentialsError",
    "RefreshError",
}
_UNREACHABLE_ERRORS = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"}

WORKDIR_RULE = (
    "the workdir must be a POSIX path (a local folder, or a volume shared by every node on a "
    "cluster), not {url}: object storage is for inputs (dataset.url_list, text.corpora) and "
    "published shards (publish.shards, publish.text_shards)"
)


def scheme(location: str) -> str | None:
    """The URL scheme of `location` (lower case), None for a plain path."""
    m = _SCHEME.match(str(location))
    return m.group(1).lower() if m else None


def is_remote(location: str) -> bool:
    """Whether `location` is read through a filesystem other than the local one (s3://, gs://,
    http://...); file:// and plain paths are local."""
    return scheme(location) not in (None, "file", "local")


def is_object_store(location: str) -> bool:
    return scheme(location) in REMOTE_SCHEMES


def workdir_problem(workdir: str | Path) -> str | None:
    """The one line refusing a workdir that is a URL (also as pathlib mangles it), else None."""
    text = str(workdir)
    m = _SCHEME_LIKE.match(text)
    if m is None or m.group(1).lower() in ("file",):
        return None
    return WORKDIR_RULE.format(url=re.sub(r"^([^:/]+):/(?!/)", r"\1://", text))


def join(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}"


def bucket(location: str) -> str | None:
    """`s3://bucket/key` -> `bucket`."""
    if not is_remote(location):
        return None
    return location.split("://", 1)[1].split("/", 1)[0] or None


def _credentials_fix(location: str) -> str:
    if scheme(location) in ("gs", "gcs"):
        return (
            "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
            "`gcloud auth application-default login` (on GKE: workload identity)"
        )
    return (
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or give the node or pod a "
        "role), and AWS_ENDPOINT_URL for an S3-protocol server other than AWS"
    )


def _cause(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]


def _bucket_missing(location: str) -> bool:
    """Whether the object is missing because its bucket is (one more request, on the error path)."""
    name = bucket(location)
    if name is None:
        return False
    try:
        fs, _ = fsspec.core.url_to_fs(location)
        return not fs.exists(name)
    except Exception:  # noqa: BLE001 - this only picks the message; the original error stands
        return False


def stage_error(location: str, err: BaseException, what: str = "") -> contract.StageError | None:
    """The StageError a remote failure of `location` stands for, or None when it is not one (a
    missing object; a network error a retry may fix)."""
    label = f"{what} {location}".strip()
    names = {c.__name__ for c in type(err).__mro__}
    if names & _CREDENTIAL_ERRORS:
        return contract.StageError(
            f"{label}: no usable credentials ({_cause(err)}); {_credentials_fix(location)}"
        )
    if isinstance(err, PermissionError) or (isinstance(err, OSError) and str(err).startswith("Forbidden")):
        return contract.StageError(
            f"{label}: access denied ({_cause(err)}); give the credentials in use access to "
            f"{scheme(location)}://{bucket(location)} (read for inputs, write for publish.*) or "
            f"use others: {_credentials_fix(location)}"
        )
    if isinstance(err, FileNotFoundError):
        if _bucket_missing(location):
            return contract.StageError(
                f"{label}: bucket {bucket(location)} does not exist (or the credentials in use "
                "cannot see it); create it or fix the URL"
            )
        return None
    if names & _UNREACHABLE_ERRORS:
        return contract.StageError(
            f"{label}: the object store cannot be reached ({_cause(err)}); check the network and, "
            "for a server other than AWS, AWS_ENDPOINT_URL"
        )
    if isinstance(err, OSError | ImportError):
        return None
    module = type(err).__module__
    if module.startswith(("botocore", "aiobotocore", "s3fs", "gcsfs", "google")):
        return contract.StageError(
            f"{label}: the object store refused the request ({_cause(err)}); check the URL and the "
            f"credentials: {_credentials_fix(location)}"
        )
    return None


@contextlib.contextmanager
def errors(location: str, what: str = "") -> Iterator[None]:
    """Remote failures of `location` inside the block as one-line StageErrors (see `stage_error`);
    a local location is left alone."""
    if not is_remote(location):
        yield
        return
    try:
        yield
    except contract.StageError:
        raise
    except Exception as err:
        translated = stage_error(location, err, what)
        if translated is None:
            raise
        raise translated from err


def open_input(location: str, *, compression: str | None = None, what: str = "") -> IO[bytes]:
    """`location` open for reading bytes, streamed: a local path with open() (or through fsspec
    when `compression` asks for decompression), a remote object with ranged reads of
    READ_BLOCK_BYTES, read ahead sequentially. FileNotFoundError when it does not exist."""
    if not is_remote(location):
        if compression is None:
            return open(location.removeprefix("file://"), "rb")  # the caller closes it
        return fsspec.open(location, "rb", compression=compression).open()
    with errors(location, what):
        if compression is not None:  # the client's default blocks, read ahead just the same
            return fsspec.open(location, "rb", compression=compression).open()
        fs, path = fsspec.core.url_to_fs(location)
        return fs.open(path, "rb", block_size=READ_BLOCK_BYTES, cache_type="readahead")


def info(location: str, what: str = "") -> dict[str, Any] | None:
    """The filesystem's info for `location` (size, ETag, ...), None when it does not exist."""
    with errors(location, what):
        fs, path = fsspec.core.url_to_fs(location)
        try:
            return fs.info(path)
        except FileNotFoundError:
            if is_remote(location) and _bucket_missing(location):
                raise
            return None


def exists(location: str, what: str = "") -> bool:
    with errors(location, what):
        fs, path = fsspec.core.url_to_fs(location)
        return fs.exists(path)


def size(location: str, what: str = "") -> int | None:
    """A file's size in bytes, None when it does not exist."""
    found = info(location, what)
    return None if found is None else found.get("size")


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
