"""Whether an input file (local path, s3:// or gs:// URL, any fsspec URL) can be read, as one line
naming the fix."""

from __future__ import annotations

import fsspec

from mvlp_core import contract, storage


def problem(location: str, what: str, field: str) -> str | None:
    """None if `location` exists and is a file that can be opened; else the line that says why."""
    try:
        with storage.errors(location, what):
            fs, path = fsspec.core.url_to_fs(location)
            remote = storage.is_remote(location)  # a missing bucket is a StageError, not "not found"
            if (storage.info(location, what) is None) if remote else not fs.exists(path):
                return f"{what} {location} not found; check {field}"
            if fs.isdir(path):
                return f"{what} {location} is a folder; set {field} to a file"
            with fs.open(path, "rb") as f:
                f.read(1)
    except contract.StageError as err:  # credentials, access, no bucket: its line names the fix
        return str(err)
    except ImportError as err:
        return f"{what} {location} needs a filesystem that is not installed ({err}); install it or stage the file locally"
    except (OSError, ValueError) as err:
        return f"{what} {location} cannot be read ({' '.join(str(err).split())[:120]}); check {field}"
    return None
