"""Stage fingerprints: what a stage's output depends on, hashed into one value, and why a recorded
fingerprint no longer matches.

A stage's output depends on its config (the spec fields it reads, perf-only ones left out), on its
input stages (their fingerprints) and on the code it runs. The code is found from the import graph:
the stage's own module and its engines' modules, every project module they import (at module level
or inside a function, transitively) and the `__init__` of every package on the way. Spec modules
are left out: a schema reaches the output only through the values it validates, and those are
hashed as config. The manifest records all three parts (`Basis.record`), so `mvlp status` can name
what changed: a config field with its old and new value, an input stage, or the files.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("mvlp_core", "ray_jobs")
# schema modules: their effect on output is the config values, hashed as such
NOT_CODE = ("mvlp_core.spec",)

_parsed: dict[Path, tuple[tuple[int, int], list[tuple[str, int, tuple[str, ...]]]]] = {}


def _imports(path: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    """(module, level, names) of every import statement in a file, cached by mtime and size."""
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _parsed.get(path)
    if cached and cached[0] == key:
        return cached[1]
    found: list[tuple[str, int, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level, tuple(a.name for a in node.names)))
    _parsed[path] = (key, found)
    return found


class _Finder:
    """Module name -> source file, for the project's packages and those of the given roots."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.bases = {top: PROJECT_ROOT for top in PROJECT_PACKAGES}
        for root in roots:
            top = root.split(".")[0]
            if top in self.bases:
                continue
            if (PROJECT_ROOT / top).is_dir() or (PROJECT_ROOT / f"{top}.py").is_file():
                self.bases[top] = PROJECT_ROOT
                continue
            spec = importlib.util.find_spec(root)
            if spec is None or spec.origin is None:
                raise ModuleNotFoundError(f"stage code module {root!r} not found")
            origin = Path(spec.origin)
            depth = root.count(".") + (1 if origin.name == "__init__.py" else 0)
            self.bases[top] = origin.parents[depth]

    def file(self, module: str) -> Path | None:
        top = module.split(".")[0]
        if top not in self.bases or any(module == n or module.startswith(n + ".") for n in NOT_CODE):
            return None
        base = self.bases[top].joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def code_files(roots: Iterable[str]) -> list[Path]:
    """The project source files that the modules `roots` run, sorted."""
    roots = list(roots)
    finder = _Finder(roots)
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = finder.file(module)
        if path is None:
            continue
        seen[module] = path
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # packages run their __init__
        package = _package_of(module, path)
        for name, level, names in _imports(path):
            if level:
                anchor = package.split(".")[: len(package.split(".")) - (level - 1)]
                name = ".".join([*anchor, name] if name else anchor)
            todo.append(name)
            todo += [f"{name}.{n}" for n in names if n != "*"]  # `from pkg import module`
    return sorted(set(seen.values()))


def code_hashes(roots: Iterable[str]) -> dict[str, str]:
    """{path relative to the project root: sha256 prefix} over `code_files(roots)`."""
    out = {}
    for path in code_files(roots):
        try:
            rel = path.relative_to(PROJECT_ROOT).as_posix()
        except ValueError:
            rel = path.as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def plain(value: Any) -> Any:
    """A value as JSON gives it back (tuples as lists, paths as strings), so a recorded config
    compares equal to the same config computed again."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True)
class Basis:
    """What one stage's output depends on: its config, its inputs' fingerprints, its code."""

    stage: str
    config: dict[str, Any]
    inputs: dict[str, str]
    code: dict[str, str]

    @cached_property
    def fingerprint(self) -> str:
        payload = json.dumps(self.record(), sort_keys=True, default=str)
        return hashlib.sha256(f"{self.stage}\n{payload}".encode()).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        """What the manifest keeps, to explain a later mismatch."""
        return {"config": plain(self.config), "inputs": dict(self.inputs), "code": dict(self.code)}


@dataclass(frozen=True)
class Change:
    """One reason a stage's recorded fingerprint differs from the expected one."""

    kind: str  # config | input | code | unknown
    what: str
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        if self.kind == "config":
            return f"config {self.what}: {_short(self.old)} -> {_short(self.new)}"
        if self.kind == "input":
            return f"input stage {self.what} changed"
        if self.kind == "code":
            how = "added" if self.old is None else "removed" if self.new is None else "edited"
            return f"code {self.what} ({how})"
        return self.what


def _short(value: Any) -> str:
    if value is _MISSING:
        return "(unset)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


_MISSING = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def changes(recorded: dict[str, Any] | None, now: Basis) -> list[Change]:
    """Why output recorded with `recorded` (a manifest's basis) is not what `now` would make:
    config fields (old and new value), input stages, code files. Empty when they agree."""
    if not recorded:
        return [Change("unknown", "its manifest does not record what it was made from (an older mvlp)")]
    found: list[Change] = []
    old_cfg, new_cfg = _flatten(recorded.get("config", {})), _flatten(plain(now.config))
    for key in sorted(set(old_cfg) | set(new_cfg)):
        old, new = old_cfg.get(key, _MISSING), new_cfg.get(key, _MISSING)
        if old != new:
            found.append(Change("config", key, old, new))
    old_in = recorded.get("inputs", {})
    for name in sorted(set(old_in) | set(now.inputs)):
        if old_in.get(name) != now.inputs.get(name):
            found.append(Change("input", name, old_in.get(name), now.inputs.get(name)))
    old_code = recorded.get("code", {})
    for path in sorted(set(old_code) | set(now.code)):
        if old_code.get(path) != now.code.get(path):
            found.append(Change("code", path, old_code.get(path), now.code.get(path)))
    return found
