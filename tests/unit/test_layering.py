"""The layers import one way: flows -> ray_jobs -> mvlp_core, flows -> mvlp_core. The library
never imports an orchestrator or Ray (so it runs anywhere and its tests need neither); Ray jobs
never import flows (a RayJob pod has no Prefect); training, model and evaluation code never import a
stage's internals (what they share lives outside mvlp_core/stages). Checked on every import
statement, inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) for every import in a package, relative ones resolved."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        package_parts = list(rel.parent.parts)  # what a relative import is relative to
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                found += [(str(rel), node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                name = node.module or ""
                if node.level:
                    base = package_parts[: len(package_parts) - (node.level - 1)]
                    name = ".".join([*base, name] if name else base)
                found.append((str(rel), node.lineno, name))
    return found


def offenders(package: str, forbidden: tuple[str, ...], only_under: str = "") -> list[str]:
    return [
        f"{file}:{line} imports {name}"
        for file, line, name in imports(package)
        if file.startswith(only_under) and any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden", "only_under"),
    [
        ("mvlp_core", ("prefect", "ray", "flows", "ray_jobs"), ""),
        ("ray_jobs", ("flows", "prefect"), ""),
        ("mvlp_core", ("mvlp_core.stages",), "mvlp_core/train"),
        ("mvlp_core", ("mvlp_core.stages",), "mvlp_core/model"),
        ("mvlp_core", ("mvlp_core.stages",), "mvlp_core/eval"),
    ],
)
def test_imports_flow_one_way(package: str, forbidden: tuple[str, ...], only_under: str) -> None:
    assert imports(package), f"no imports found under {package}: the scan itself is broken"
    assert offenders(package, forbidden, only_under) == []


def test_the_scan_sees_imports_inside_functions() -> None:
    """The check would catch a lazy import: the flows' own lazy imports of ray_jobs are found."""
    assert any(name.startswith("ray_jobs") for _, _, name in imports("flows"))
    lazy = [(f, n) for f, _, n in imports("flows") if f == "flows/cli.py" and n == "flows.pipeline_flow"]
    assert lazy, "flows/cli.py imports flows.pipeline_flow inside _execute"
