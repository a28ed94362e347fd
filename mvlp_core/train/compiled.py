"""`pretrain.compile`: torch.compile on each tower of the model a rank trains.

A family's `towers()` names its standard transformer stacks; each is compiled in place
(`nn.Module.compile`: state-dict keys, checkpoints and the DDP wrapping stay as they are) on its
first call. The code between the towers (task packing, in-batch negatives, masking) has
data-dependent shapes and stays eager. A family without `towers()` has its whole model compiled,
with graph breaks where dynamo cannot trace.

Every tower enters dynamo through the same frame (transformers' forward wrapper, or `Module`'s
call), so their compiled graphs share one cache: its limit is raised to 8 entries a tower
(torch's default for one function), else the towers' first graphs, a frozen tower's no-grad one and
the recompiles for new batch shapes would fill it and later towers run eager with only a warning.
"""

from __future__ import annotations

from typing import Any

import torch
import torch._dynamo
from torch import nn

BACKEND = "inductor"
ENTRIES_PER_TOWER = 8  # torch._dynamo.config.recompile_limit's default, for one function


def compile_towers(model: nn.Module, mode: str = "default", backend: str | None = None) -> list[nn.Module]:
    """Compile `model`'s towers in place with `backend` (BACKEND when None; `mode` is inductor's:
    default, reduce-overhead for CUDA graphs, max-autotune); returns them."""
    backend = backend or BACKEND
    towers = model.towers() if hasattr(model, "towers") else [model]
    raise_recompile_limit(torch._dynamo.config, ENTRIES_PER_TOWER * len(towers))
    for tower in towers:
        tower.compile(backend=backend, **({"mode": mode} if backend == "inductor" else {}))
    return towers


def raise_recompile_limit(config: Any, entries: int) -> None:
    """Let dynamo's shared cache hold at least `entries` graphs (`recompile_limit`, called
    `cache_size_limit` before torch 2.7: a lent GPU machine brings its own torch)."""
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), entries))
