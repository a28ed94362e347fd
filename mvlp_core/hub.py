"""Whether the Hugging Face hub answers from here, asked once per process.

`mvlp plan` asks it about checkpoint names it cannot find locally or in the cache, instead of
waiting out the hub client's retries (about 45 s a name) on a machine without it.
"""

from __future__ import annotations

import functools
import socket
from urllib.parse import urlsplit


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub (HF_ENDPOINT) accepts a connection; False with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlsplit(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
