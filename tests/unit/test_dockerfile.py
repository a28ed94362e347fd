"""The Dockerfile, checked statically (no Docker daemon here): layer order keeps dependencies
cached across code edits, eflomal is built for a portable CPU target, the image runs as non-root,
and both variants exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _index(instrs: list[tuple[str, str]], op: str, pattern: str) -> int:
    hits = [i for i, (o, rest) in enumerate(instrs) if o == op and re.search(pattern, rest)]
    assert hits, f"no {op} matching {pattern!r}"
    return hits[0]


def test_layers_order_os_then_deps_then_code() -> None:
    ins = _instructions()
    apt = _index(ins, "RUN", r"apt-get install")
    pyproject = _index(ins, "COPY", r"^pyproject\.toml")
    deps = _index(ins, "RUN", r"pip install -r requirements\.txt")
    code = _index(ins, "COPY", r"mvlp_core")
    assert apt < pyproject < deps < code
    # nothing but pyproject.toml is copied before the dependency layer
    copies_before = [rest for op, rest in ins[:deps] if op in ("COPY", "ADD")]
    assert copies_before == ["pyproject.toml ./"]
    assert not any(op == "COPY" and rest.split()[0] == "." for op, rest in ins), (
        "COPY . . would bust the cache"
    )
    for package in ("mvlp_core", "flows", "ray_jobs", "data_specs"):
        assert _index(ins, "COPY", package) > deps


def test_cpu_and_cuda_variants() -> None:
    ins = _instructions()
    froms = [rest for op, rest in ins if op == "FROM"]
    assert any(f.endswith("AS base-cpu") for f in froms)
    assert any("nvidia/cuda" in f and f.endswith("AS base-cuda") for f in froms)
    assert "base-${VARIANT} AS os" in froms
    assert ("ARG", "VARIANT=cpu") in ins


def test_eflomal_is_built_for_a_portable_target() -> None:
    ins = _instructions()
    assert ("ARG", "EFLOMAL_MARCH=x86-64-v2") in ins
    build = ins[_index(ins, "RUN", r"eflomal==2\.0\.0")][1]
    assert "s/-march=native/-march=${EFLOMAL_MARCH}/" in build
    assert "--no-binary :all:" in build and "grep -q" in build  # fails the build if the flag is not replaced
    assert not any("march=native" in rest for op, rest in ins if op == "RUN" and "sed" not in rest)


def test_runs_as_non_root_user_1000() -> None:
    ins = _instructions()
    users = [rest for op, rest in ins if op == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    assert _index(ins, "USER", "1000") > _index(ins, "RUN", r"pip install --no-deps")
    assert "useradd --uid 1000 --gid 100" in ins[_index(ins, "RUN", "useradd")][1]
