"""The per-step data plan of multi-stream pretraining: which stream-tasks a step's batch holds, and
how many items each draws.

A plan is a pure function of (schedule, seed, step), so every rank and every DataLoader worker
computes the same plan for the same step without a broadcast, and a resumed run knows exactly how
many items each stream gave up to any step (what `MultiStreamBatches` fast-forwards by). `step`
counts batches, i.e. micro-steps: with gradient accumulation, optimizer step k is micro-steps
k·accum … k·accum + accum − 1, and a `ratio` or `round_robin` schedule keeps its task over them
(pass `accum`), so one optimizer step sees one task.

Schedules:
- `all_streams`: every task every step with fixed sizes (the weakly-supervised mVLP: 512 image,
  2,048 parallel and 2,048 monolingual items a step);
- `ratio`: one task per optimizer step, drawn with the given ratios from a generator seeded by
  (seed, optimizer step) (UC²'s 9:12:9:3);
- `round_robin`: one task per optimizer step, in turn (M³P).

DataLoader workers: worker w of n yields steps start+w, start+w+n, …, so the DataLoader's
round-robin over workers gives the steps in order; the data a step draws belongs to the step's
lane (step mod n), not to the process, so a run resumed at any step draws what the uninterrupted
run drew (the number of workers must stay the same).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

STREAMS = ("image", "parallel", "mono")
KINDS = ("all_streams", "ratio", "round_robin")


@dataclass(frozen=True)
class Schedule:
    """What a step draws. `sizes`: task -> items it draws in a step where it is active (in this
    order within a step); `streams`: task -> the stream it reads (one of STREAMS; by default the
    task's own name); `ratios`: task -> relative frequency (`ratio` only); `accum`: micro-steps
    per optimizer step, over which a drawn task is held."""

    kind: str
    sizes: Mapping[str, int]
    ratios: Mapping[str, float] = field(default_factory=dict)
    streams: Mapping[str, str] = field(default_factory=dict)
    accum: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"schedule kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if not self.sizes or any(int(n) != n or n < 1 for n in self.sizes.values()):
            raise ValueError(f"schedule sizes must be positive integers per task, got {dict(self.sizes)}")
        for task in self.sizes:
            if self.stream_of(task) not in STREAMS:
                raise ValueError(
                    f"task {task!r} reads stream {self.stream_of(task)!r}: name one of {', '.join(STREAMS)} "
                    "in `streams`"
                )
        if self.kind == "ratio":
            if set(self.ratios) != set(self.sizes) or any(r < 0 for r in self.ratios.values()):
                raise ValueError(
                    f"ratio schedule: `ratios` {dict(self.ratios)} must give a non-negative ratio for "
                    f"exactly the tasks of `sizes` {sorted(self.sizes)}"
                )
            if sum(self.ratios.values()) <= 0:
                raise ValueError("ratio schedule: the ratios sum to 0")
        if self.accum < 1:
            raise ValueError(f"accum must be >= 1, got {self.accum}")

    def stream_of(self, task: str) -> str:
        return self.streams.get(task, task)

    def used_streams(self) -> set[str]:
        return {self.stream_of(t) for t in self.sizes}

    @classmethod
    def all_streams(cls, image: int = 512, parallel: int = 2048, mono: int = 2048) -> Schedule:
        """Every stream every step (the weakly-supervised mVLP's 512/2,048/2,048 by default); a
        size of 0 leaves the stream out."""
        sizes = {k: n for k, n in (("image", image), ("parallel", parallel), ("mono", mono)) if n}
        return cls("all_streams", sizes)


def plan_for(schedule: Schedule, seed: int, step: int) -> dict[str, int]:
    """task -> number of items in batch `step` (only the tasks active in it), from (seed, step)
    alone: the same on every rank and in every DataLoader worker."""
    if schedule.kind == "all_streams":
        return dict(schedule.sizes)
    opt_step = step // schedule.accum
    tasks = list(schedule.sizes)
    if schedule.kind == "round_robin":
        task = tasks[opt_step % len(tasks)]
    else:  # a string seed is hashed with sha512: stable across processes and hash seeds
        rng = random.Random(f"mvlp-step-plan:{seed}:{opt_step}")
        task = rng.choices(tasks, weights=[schedule.ratios[t] for t in tasks])[0]
    return {task: schedule.sizes[task]}


@dataclass(frozen=True)
class StepPlan:
    """A schedule bound to a seed: `plan.at(step)` is `plan_for(schedule, seed, step)`."""

    schedule: Schedule
    seed: int

    def at(self, step: int) -> dict[str, int]:
        return plan_for(self.schedule, self.seed, step)


def lane_of(start_step: int, worker: int, workers: int) -> int:
    """The lane (step mod workers) whose steps DataLoader worker `worker` yields in a run started
    at `start_step`: its first step is start_step + worker, the DataLoader's first pick."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} of {workers}")
    return (start_step + worker) % workers


def owned_steps(start_step: int, worker: int, workers: int) -> Iterator[int]:
    """The steps worker `worker` of `workers` yields from `start_step` on: start+w, start+w+n, …
    (a DataLoader takes one batch from each worker in turn, so it yields them in step order)."""
    lane_of(start_step, worker, workers)  # validates
    step = start_step + worker
    while True:
        yield step
        step += workers
