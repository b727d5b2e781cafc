"""Every relative link in the docs resolves: the file (or directory) exists, and a
``#fragment`` names an anchor GitHub creates in that Markdown file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.unit.docs import markdown
from tests.unit.docs.docs_support import ROOT, documents, relative

DOCUMENTS = documents()


def _external(target: str) -> bool:
    return (
        target.startswith(("http://", "https://", "mailto:", "//")) or ":" in target.split("/")[0]
    )


def _anchors(document: Path) -> set[str]:
    return markdown.anchors(document.read_text(encoding="utf-8"))


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    text = document.read_text(encoding="utf-8")
    problems: list[str] = []
    for link in markdown.links(text):
        if not link.target or _external(link.target):
            continue
        path, _, fragment = link.target.partition("#")
        target = document if not path else (document.parent / unquote(path)).resolve()
        where = f"{document.relative_to(root).as_posix()}:{link.line}: {link.target}"
        if not target.exists():
            problems.append(f"{where}: no such file")
            continue
        if root not in target.parents and target != root:
            problems.append(f"{where}: outside the repository")
            continue
        if link.target == "#":
            problems.append(f"{where}: an empty fragment")
        elif fragment and target.suffix == ".md" and unquote(fragment) not in _anchors(target):
            shown = target.relative_to(root).as_posix()
            problems.append(f"{where}: no heading or anchor #{fragment} in {shown}")
    return problems


def test_the_docs_are_all_found() -> None:
    names = {relative(d) for d in DOCUMENTS}
    assert {"README.md", "bench/README.md", "docs/configuration.md", "deploy/README.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=[relative(d) for d in DOCUMENTS])
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_a_broken_link_and_a_missing_anchor_are_found(tmp_path: Path) -> None:
    # The checker itself can fail: a missing file, a missing anchor, and a good link.
    (tmp_path / "other.md").write_text("# Other\n\n## The `x-auth-*` headers (HTTP)\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "See [a](missing.md), [h](#), [b](other.md#nope), [c](other.md#the-x-auth--headers-http),\n"
        "[d](#local), [e\nsplit](other.md#other) and `[f](ignored.md)`.\n\n"
        "```\n[g](in-a-fence.md)\n```\n\n## Local\n"
    )
    problems = [p.split(": ", 1)[1] for p in broken_links(doc, tmp_path)]
    assert problems == [
        "missing.md: no such file",
        "#: an empty fragment",
        "other.md#nope: no heading or anchor #nope in other.md",
    ]


def test_github_anchors() -> None:
    text = "# A\n## Dry-run, candidate policies and hot reload\n## A\n```\n# not a heading\n```\n"
    assert markdown.anchors(text) == {"a", "dry-run-candidate-policies-and-hot-reload", "a-1"}
    assert markdown.slug("2. A workload with the sidecars written in (`deploy/k8s/base`)") == (
        "2-a-workload-with-the-sidecars-written-in-deployk8sbase"  # GitHub drops "/"
    )
    assert markdown.slug("Scaling: one worker per process") == "scaling-one-worker-per-process"
