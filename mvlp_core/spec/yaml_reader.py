"""Spec YAML read as data, and only as data: safe tags only, no duplicate keys, alias expansion and
file size bounded, every failure a one-line SpecError naming the file, the line and the fix.

PyYAML's safe loader lets a later key silently replace an earlier one (a second `ingest:` block
wins) and expands aliases by reference, so a few hundred bytes of nested aliases ("billion
laughs") become a structure that validation and error messages walk for hours. Both are refused
here before anything else sees the document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mvlp_core.spec.base import SpecError

MAX_BYTES = 1 << 20  # a spec is a page of settings; 1 MiB is far past any real one
MAX_NODES = 20_000  # YAML nodes after alias expansion


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(f"key {key!r} appears twice (lines {first} and {again}); keep one")


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that repeats a key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise _DuplicateKey(key, first[key], line)
                first[key] = line
            except TypeError:  # an unhashable key: the base loader reports it
                break
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes `node` stands for once every alias is expanded (shared nodes counted per use)."""
    if id(node) in memo:
        if memo[id(node)] < 0:
            raise yaml.YAMLError("an alias refers to a node that contains it (a recursive structure)")
        return memo[id(node)]
    memo[id(node)] = -1
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    if size > MAX_NODES:
        raise yaml.YAMLError(
            f"aliases expand it to more than {MAX_NODES} nodes (a YAML bomb?); write the values out"
        )
    memo[id(node)] = size
    return size


def parse(text: str) -> Any:
    """The data of one YAML document; yaml.YAMLError (or a subclass) when it is not safe data."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _one_line(err: yaml.YAMLError) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def read(path: Path) -> Any:
    """The data of a spec file, or a SpecError that names the file, what is wrong and the fix."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"spec {path} is a directory; give a YAML file in it (e.g. {path}/pipeline.yaml)")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise SpecError(f"invalid spec {path}: over {MAX_BYTES} bytes; a spec is a page of settings")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"invalid spec {path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise SpecError(
            f"cannot read spec {path}: {err.strerror or err}; check the path and its permissions"
        ) from None
    try:
        return parse(text)
    except yaml.constructor.ConstructorError as err:
        raise SpecError(
            f"invalid spec {path}: not safe YAML ({err.problem}); specs are data, tags such as "
            "!!python/object are refused: write plain values"
        ) from None
    except _DuplicateKey as err:
        raise SpecError(f"invalid spec {path}: {err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"invalid spec {path}: not YAML ({_one_line(err)})") from None
    except RecursionError:
        raise SpecError(f"invalid spec {path}: nested too deeply; write a flatter document") from None


def override_value(text: str, dotted: str) -> Any:
    """A `--set a.b=VALUE` value parsed as YAML, or a SpecError naming the override."""
    try:
        return parse(text)
    except yaml.YAMLError as err:
        raise SpecError(
            f"--set {dotted}={text}: the value is not YAML ({_one_line(err)}); quote strings with "
            "special characters, e.g. --set 'a.b=\"x: y\"'"
        ) from None
    except RecursionError:
        raise SpecError(f"--set {dotted}: the value is nested too deeply") from None
