"""YAML loading that remembers where every value came from.

Configuration and policy errors must name the file and line of the bad key. PyYAML's node graph
keeps the marks; this module builds plain Python data from it together with a map from the
value's path (a tuple of keys and list indexes) to its 1-based line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Located:
    """One YAML document: its data and the line of every key and item in it."""

    data: Any
    lines: dict[PathKey, int]
    file: str
    start_line: int

    def line_of(self, path: PathKey) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.start_line


class YamlError(Exception):
    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader; duplicate keys are errors, not silent overwrites."""


def _build(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if node.tag not in _PLAIN_TAGS and isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        raise YamlError(file, node.start_mark.line + 1, f"unsupported YAML tag {node.tag!r}")
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(file, key_node.start_mark.line + 1, "keys must be scalars")
            key = str(_UniqueKeyLoader("").construct_scalar(key_node))
            if key in out:
                raise YamlError(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, (*path, key), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, index), lines, file) for index, item in enumerate(node.value)]
    try:
        return _UniqueKeyLoader("").construct_object(node, deep=True)  # type: ignore[no-untyped-call]
    except yaml.constructor.ConstructorError as exc:
        raise YamlError(
            file, node.start_mark.line + 1, f"unsupported YAML: {exc.problem}"
        ) from None


def _documents(text: str, file: str) -> Iterator[Located]:
    try:
        nodes = list(yaml.compose_all(text, Loader=_UniqueKeyLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlError(file, line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(file, 1, f"invalid YAML: {exc}") from None
    for node in nodes:
        if node is None:
            continue
        lines: dict[PathKey, int] = {}
        data = _build(node, (), lines, file)
        yield Located(data=data, lines=lines, file=file, start_line=node.start_mark.line + 1)


def load_documents(path: Path) -> list[Located]:
    """Every document in a YAML file, with line information."""
    text = path.read_text(encoding="utf-8")
    return list(_documents(text, str(path)))


def load_single(path: Path) -> Located:
    """Exactly one document (an empty file is an empty mapping)."""
    docs = load_documents(path)
    if not docs:
        return Located(data={}, lines={}, file=str(path), start_line=1)
    if len(docs) > 1:
        raise YamlError(str(path), docs[1].start_line, "expected a single YAML document")
    return docs[0]
