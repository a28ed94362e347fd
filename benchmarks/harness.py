"""`make bench`: run every `benchmarks/bench_*.py`, then rewrite BENCHMARKS.md and results.json.

Each benchmark module defines `run(runs: int) -> list[dict]` and measures its figure side by side
with a baseline in the same process, so the ratio means something on any machine; absolute
values are kept too, with the machine and the date. A module that fails is reported as failed in
the table (with its error), never silently dropped. A module may define `available() -> str |
None`: a reason means this machine cannot run it (a GPU benchmark on a CPU box); its earlier rows
are kept, or, with none, it is listed as skipped with the reason.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import traceback
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.json"
REPORT = ROOT / "BENCHMARKS.md"
KEYS = ("name", "value", "unit", "baseline", "baseline_value", "ratio", "runs", "higher_is_better", "notes")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    host = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    try:
        import torch

        if torch.cuda.is_available():
            host = f"{torch.cuda.get_device_name(0)}, {host}"
    except ImportError:
        pass
    return host


def discover(only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))
    return [n for n in names if not only or n.removeprefix("bench_") in only or n in only]


def collect(modules: list[str], runs: int) -> tuple[list[dict], dict[str, str], dict[str, str]]:
    """Run the modules; returns their rows, the failures and the modules this machine cannot run
    (each with its reason)."""
    results: list[dict] = []
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    today, host = date.today().isoformat(), machine()
    for name in modules:
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            why = module.available() if hasattr(module, "available") else None
            if why:
                print(f"skipped: {why}", flush=True)
                skipped[name] = why
                continue
            rows = module.run(runs)
        except Exception as err:  # a broken benchmark is reported, the others still run
            traceback.print_exc()
            failures[name] = f"{type(err).__name__}: {err}"
            continue
        for row in rows:
            missing = [k for k in KEYS if k not in row]
            if missing:
                failures[name] = f"result {row.get('name')!r} lacks {missing}"
                continue
            results.append({**{k: row[k] for k in KEYS}, "date": today, "module": name, "machine": host})
    return results, failures, skipped


def merge(previous: list[dict], results: list[dict], skipped: set[str], keep_all: bool) -> list[dict]:
    """Earlier rows stay when this run measured a subset (`keep_all`) or could not run their module
    here (a GPU benchmark on a CPU machine); a figure measured now replaces its earlier row."""
    names = {r["name"] for r in results}
    keep = [r for r in previous if r["name"] not in names and (keep_all or r.get("module") in skipped)]
    return keep + results


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def render(
    results: list[dict], failures: dict[str, str], host: str, skipped: dict[str, str] | None = None
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/harness.py); do not edit by hand. Every figure is a",
        "median over `runs` runs, measured side by side with its baseline in the same script, so",
        "the ratio carries over between machines better than the absolute values do.",
        "",
        f"Machine: {host}, unless a row names another. Written: {date.today().isoformat()}.",
        "",
        "| name | value | baseline | baseline value | ratio | runs | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        better = "higher is better" if r["higher_is_better"] else "lower is better"
        where = f"measured {r['date']}" + (f" on {r['machine']}" if r.get("machine", host) != host else "")
        lines.append(
            f"| {r['name']} | {_fmt(r['value'])} {r['unit']} | {r['baseline']} | "
            f"{_fmt(r['baseline_value'])} {r['unit']} | {_fmt(r['ratio'])} ({better}) | {r['runs']} | "
            f"{r['notes'].rstrip('.')}; {where} |"
        )
    for name, err in failures.items():
        lines.append(f"| {name} | failed | – | – | – | – | {err} |")
    listed = {r.get("module") for r in results}
    for name, why in (skipped or {}).items():
        if name not in listed:
            lines.append(f"| {name} | skipped | – | – | – | – | {why} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the median is kept)")
    parser.add_argument("--only", nargs="*", help="benchmark names (e.g. align translate)")
    args = parser.parse_args(argv)
    modules = discover(args.only)
    if not modules:
        print("no benchmarks found", file=sys.stderr)
        return 2
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    results: list[dict] = []
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for i, name in enumerate(modules):  # written after each module: a hang or a kill loses one
        rows, failed, cannot = collect([name], args.runs)
        results += rows
        failures.update(failed)
        skipped.update(cannot)
        merged = merge(previous, results, set(skipped) | set(modules[i + 1 :]), keep_all=bool(args.only))
        RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
        REPORT.write_text(render(merged, failures, machine(), skipped))
    print(REPORT.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
