"""Reading annotation files as published: jsonl (the last line may lack its newline) and json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class AnnotationError(ValueError):
    """An annotation or prediction file that cannot be read; the message names file and cause."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AnnotationError(f"{path}:{n}: not a JSON object ({err.msg})") from None
    return rows


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def require(row: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise AnnotationError(f"{where}: missing field(s) {missing}; present: {sorted(row)}")
