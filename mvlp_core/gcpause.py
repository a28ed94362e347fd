"""Cyclic garbage collection paused around a unit of work that allocates many small containers.

CPython starts a collection every few hundred container allocations, and the older generations'
collections walk every live container: tokenising a chunk of captions into lists of tuples, or
reading alignment links into Python lists, spends about a third of its time in them while the
chunk's data is alive. The work under `paused()` builds plain lists, tuples and strings (no
reference cycles), which reference counting frees; memory stays bounded by the unit.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Disable the cyclic collector for the block; restore its previous state after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
