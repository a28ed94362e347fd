"""What a forked DataLoader process must drop of its parent: the thread-exit hooks.

A process forked from one that ran Prefect (an `mvlp run`, whose in-process stages fine-tune and
pretrain) inherits the hooks Prefect's services register with `threading._register_atexit` to
drain their worker threads at exit. Those threads do not exist in the child, so at its exit the
hook fails, multiprocessing ends the child with code 1 and torch reports a loader process that
"exited unexpectedly" as it shuts the loader down. The hooks belong to the parent's threads; a
loader process has none of its own registered when it starts.
"""

from __future__ import annotations

import threading


def forget_parent_thread_exits(_worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: clear the thread-exit hooks inherited from the parent."""
    threading._threading_atexits.clear()  # type: ignore[attr-defined]  # CPython's list (3.9+)
