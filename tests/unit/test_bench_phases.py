"""The shard benchmark's breakdown by phase: a phase's seconds leave out the phases called inside
it, so the phases and "the rest" add up to the run."""

from __future__ import annotations

import types

from benchmarks import bench_shard


def test_a_phase_inside_another_counts_in_the_inner_one_only():
    clock = [0.0]
    work = types.SimpleNamespace()

    def inner() -> str:
        clock[0] += 3.0
        return "inner"

    def outer() -> str:
        clock[0] += 2.0
        got = work.inner()
        clock[0] += 1.0
        return got

    work.inner, work.outer = inner, outer
    phases = [(work, "outer", "outer"), (work, "inner", "inner")]
    with bench_shard.timed_phases(phases, clock=lambda: clock[0]) as spent:
        assert work.outer() == "inner"
        work.inner()
    assert dict(spent) == {"outer": 3.0, "inner": 6.0}
    assert work.outer is outer and work.inner is inner  # unpatched after the block
