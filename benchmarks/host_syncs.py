"""Where a training step makes the host wait for the device, found on CPU.

On a GPU, an op whose result's size or value the host needs (`.item()`, `int()`, `bool()` of a
tensor, `nonzero`, indexing with a boolean mask, `masked_select`, `repeat_interleave` without its
output size) synchronises: the host stops queueing kernels until the GPU has caught up, and a step
with many such points leaves the GPU idle between them. `HostSyncs` watches the aten ops a step
dispatches and counts those, by the innermost line of mvlp code that asked for them, so they can
be found and counted without a GPU (what the GPU's own profiler would show as stalls).

`python -m benchmarks.host_syncs [WORKDIR]`: one training step of each of the demo's models on
the demo's data (made in WORKDIR first when missing), the syncs by source line.
"""

from __future__ import annotations

import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_ALWAYS = {
    aten._local_scalar_dense.default,  # item(), int(), float(), bool() of a tensor
    aten.nonzero.default,
    aten.masked_select.default,
    aten.is_nonzero.default,
    aten.equal.default,
}
_SIZED_BY_VALUES = {aten.repeat_interleave.Tensor, aten.repeat_interleave.self_Tensor}
ROOT = Path(__file__).resolve().parents[1]


def syncs(func: Any, args: tuple, kwargs: dict) -> bool:
    """Whether this aten call needs a device value on the host (on CUDA: a synchronisation)."""
    if func in _ALWAYS:
        return True
    if func is aten.index.Tensor:  # a boolean mask index: the result's size is the mask's count
        return any(i is not None and i.dtype == torch.bool for i in args[1])
    return func in _SIZED_BY_VALUES and kwargs.get("output_size") is None


class HostSyncs(TorchDispatchMode):
    """Counts the syncing ops dispatched inside the block: `hits[(op, "file:line function: code")]`,
    the line being the innermost frame under `ROOT` outside this module (or "?" for none)."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[tuple[str, str]] = Counter()

    @property
    def total(self) -> int:
        return sum(self.hits.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if syncs(func, args, kwargs):
            self.hits[(str(func), _caller())] += 1
        return func(*args, **kwargs)

    def table(self) -> str:
        return "\n".join(f"{n:4d}  {op:34s} {where}" for (op, where), n in self.hits.most_common())


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if path.is_relative_to(ROOT) and path != Path(__file__).resolve() and ".venv" not in path.parts:
            return f"{path.relative_to(ROOT)}:{frame.lineno} {frame.name}: {(frame.line or '').strip()}"
    return "?"


def main(argv: list[str]) -> None:
    from benchmarks._world import demo_data
    from benchmarks.bench_dp_step import _batches
    from mvlp_core.spec import load_spec

    workdir = Path(argv[0]) if argv else Path("/tmp/mvlp-host-syncs")
    if not (workdir / "text-shard").exists():
        demo_data(workdir)
    torch.manual_seed(0)
    for name, _ in load_spec(ROOT / "data_specs/pipelines/demo.yaml", workdir=workdir).trained_models():
        model, batches = _batches(workdir, name, 0, 1)
        batch = {k: v for k, v in next(batches).items() if k not in ("skipped", "n_samples")}
        model(batch)["loss"].backward()  # first-call work (lazy init) is not a step's
        with HostSyncs() as seen:
            model(batch)["loss"].backward()
        print(f"{name}: {seen.total} host syncs in one step (forward and backward)\n{seen.table()}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
