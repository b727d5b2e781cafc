from __future__ import annotations

from pathlib import Path

import pytest

from app.yamlsrc import YamlError, load_documents, load_single


def test_lines_of_keys_and_items(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("a:\n  b: [1, 2]\n  c:\n    - x: 1\n      y: true\nd: str\n")
    doc = load_single(f)
    assert doc.data == {"a": {"b": [1, 2], "c": [{"x": 1, "y": True}]}, "d": "str"}
    assert doc.line_of(("a", "c", 0, "y")) == 5
    assert doc.line_of(("d",)) == 6
    assert doc.line_of(("a", "c", 0, "missing")) == 4  # nearest known ancestor


def test_multiple_documents_keep_their_own_lines(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("a: 1\n---\nb: 2\nc: 3\n")
    docs = load_documents(f)
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2, "c": 3}]
    assert docs[1].line_of(("c",)) == 4


def test_duplicate_keys_are_refused_with_their_line(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("a: 1\nb:\n  x: 1\n  x: 2\n")
    with pytest.raises(YamlError, match=r"d.yaml:4: duplicate key 'x'"):
        load_single(f)


def test_unsafe_tags_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(YamlError, match=r"t.yaml:1: unsupported YAML tag .*python/object"):
        load_single(f)


def test_unsafe_scalar_tags_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("a: 1\nb: !!python/name:os.system ''\n")
    with pytest.raises(YamlError, match=r"s.yaml:2: unsupported YAML"):
        load_single(f)
