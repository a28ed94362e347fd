"""The command line every Ray job shares: `python -m ray_jobs.NAME --spec SPEC [--workdir DIR]
[--set a.b=c ...] [--force]`, as a RayJob entrypoint or by hand.

A spec or stage error prints one line naming the cause and the fix and exits 2; what a finished
job prints is up to it (`summary`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from mvlp_core import contract
from mvlp_core.spec import PipelineSpec, SpecError, load_spec

Runner = Callable[..., contract.Manifest]


def default_summary(stage: str, manifest: contract.Manifest) -> str:
    keys = ("samples_in", "samples_out", "rejects", "seconds")
    return json.dumps({"stage": stage, **{k: getattr(manifest, k) for k in keys}})


def main(
    stage: str,
    run: Runner,
    argv: list[str] | None = None,
    summary: Callable[[str, contract.Manifest], str] = default_summary,
) -> int:
    """Parse the shared arguments, run `run(spec, force=..., progress=...)`, print its summary."""
    module = stage.replace("-", "_")
    parser = argparse.ArgumentParser(
        prog=f"python -m ray_jobs.{module}", description=f"the {stage} stage as a Ray job"
    )
    parser.add_argument("--spec", required=True, help="pipeline spec (YAML, or a run's spec.json)")
    parser.add_argument("--workdir", help="where the run lives (default: the spec's workdir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=value")
    parser.add_argument("--force", action="store_true", help="recompute even if complete")
    args = parser.parse_args(argv)

    def progress(done: int, total: int, unit: str) -> None:
        print(f"{stage}: {done}/{total} units", file=sys.stderr, flush=True)

    try:
        spec: PipelineSpec = load_spec(args.spec, args.overrides, args.workdir)
        manifest = run(spec, force=args.force, progress=progress)
    except (SpecError, contract.StageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(stage, manifest))
    return 0
