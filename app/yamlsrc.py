"""YAML loading that remembers where every value came from.

Configuration and policy errors must name the file and line of the bad key. PyYAML's node graph
keeps the marks; this module builds plain Python data from it together with a map from the
value's path (a tuple of keys and list indexes) to its 1-based line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


def key_path(path: PathKey) -> str:
    """``path`` as a reader writes it: ``server.check.port``, ``rules[2].match``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


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

# libyaml's parser when PyYAML was built with it (policy directories can hold thousands of rules).
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Builder:
    """Turns one composed node graph into plain data plus the line of every key and item.

    Duplicate keys are errors, not silent overwrites; tags other than the safe scalar ones
    are refused.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[PathKey, int] = {}
        self._scalars = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
            raise YamlError(self.file, line, f"unsupported YAML tag {node.tag!r}")
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlError(self.file, key_line, "keys must be scalars")
                key = str(self._scalar(key_node))
                if key in out:
                    raise YamlError(self.file, key_line, f"duplicate key {key!r}")
                self.lines[(*path, key)] = key_line
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            line = node.start_mark.line + 1
            raise YamlError(self.file, line, f"unsupported YAML: {exc.problem}") from None


def parse_documents(text: str, file: str) -> list[Located]:
    """Every document in ``text`` (named ``file`` in errors), with line information."""
    documents = []
    try:
        # One document's node tree at a time: a large file never holds every node at once.
        for node in yaml.compose_all(text, Loader=_Loader):
            builder = _Builder(file)
            data = builder.build(node, ())
            documents.append(Located(data, builder.lines, file, node.start_mark.line + 1))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlError(file, line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(file, 1, f"invalid YAML: {exc}") from None
    return documents


def load_documents(path: Path) -> list[Located]:
    """Every document in a YAML file, with line information."""
    return parse_documents(path.read_text(encoding="utf-8"), str(path))


def load_single(path: Path) -> Located:
    """Exactly one document (an empty file is an empty mapping)."""
    docs = load_documents(path)
    if not docs:
        return Located(data={}, lines={}, file=str(path), start_line=1)
    if len(docs) > 1:
        raise YamlError(str(path), docs[1].start_line, "expected a single YAML document")
    return docs[0]
