"""The command line of every Ray job: `python -m ray_jobs STAGE --spec SPEC [--workdir DIR]
[--set a.b=c ...] [--force] [--keep] [--job NAME]`, as a RayJob entrypoint, through the Ray Jobs
API or by hand. The stage runs on the engine its spec picks, holding the stage's job lock
(mvlp_core.joblock): a second job for the same stage of the same workdir stops before it writes.

A spec or stage error prints one line naming the cause and the fix and exits 2; a finished job
prints the stage's counts and what it shows (the lines `mvlp run` prints).
"""

from __future__ import annotations

import argparse
import json
import sys

from mvlp_core import contract, joblock, pipeline
from mvlp_core.spec import SpecError, load_spec
from ray_jobs import engines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs", description="run one stage as a Ray job")
    parser.add_argument("stage", help=f"one of: {', '.join(pipeline.names())}")
    parser.add_argument("--spec", required=True, help="pipeline spec (YAML, or a run's spec.json)")
    parser.add_argument("--workdir", help="where the run lives (default: the spec's workdir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=value")
    parser.add_argument("--force", action="store_true", help="recompute even if complete")
    parser.add_argument(
        "--keep", action="store_true", help="keep output made by other code (recorded in its manifest)"
    )
    parser.add_argument(
        "--job", default="", help="this job's name, recorded in the stage's job lock (the flows pass it)"
    )
    args = parser.parse_args(argv)

    def progress(done: int, total: int, unit: str) -> None:
        print(f"{args.stage}: {done}/{total} units", file=sys.stderr, flush=True)

    try:
        spec = load_spec(args.spec, args.overrides, args.workdir)
        stage = pipeline.stage(args.stage)
        with joblock.holding(spec.workdir, args.stage, args.job):
            manifest = engines.run_stage(
                spec, args.stage, force=args.force, progress=progress, keep=args.keep
            )
    except (SpecError, contract.StageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    keys = ("samples_in", "samples_out", "rejects", "seconds")
    print(json.dumps({"stage": args.stage, **{k: getattr(manifest, k) for k in keys}}))
    if stage.shows is not None:
        state = pipeline.stage_state(spec, args.stage)
        for line in stage.shows(spec, pipeline.stage_dir(spec, args.stage), state).lines:
            print(line)
    return 0
