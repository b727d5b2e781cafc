"""Policy examples in the docs are the files the tests run: each YAML block that starts with a
``# docs/examples/...`` line must be a verbatim excerpt of that file.

The files themselves are run by ``ztauthz policy test`` (test_cli_policy.py) and served behind
real Envoy (tests/integration/test_least_privilege.py).
"""

from __future__ import annotations

import re

import pytest

from tests.unit.docs.docs_support import ROOT, documents, relative

BLOCK = re.compile(r"```yaml\n# (docs/examples/\S+)\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str, str]]:
    return [
        (relative(doc), m.group(1), m.group(2))
        for doc in documents()
        for m in BLOCK.finditer(doc.read_text(encoding="utf-8"))
    ]


EXAMPLES = examples()


def test_the_policy_docs_show_the_examples() -> None:
    shown = {file for source, file, _ in EXAMPLES if source == "docs/policies.md"}
    assert len(shown) >= 4, shown


@pytest.mark.parametrize(
    ("source", "file", "body"),
    EXAMPLES,
    ids=[f"{source}-{number}" for number, (source, _, _) in enumerate(EXAMPLES)],
)
def test_each_example_block_is_an_excerpt_of_its_file(source: str, file: str, body: str) -> None:
    lines = (ROOT / file).read_text(encoding="utf-8").splitlines()
    excerpt = body.rstrip("\n").splitlines()
    starts = [i for i in range(len(lines)) if lines[i : i + len(excerpt)] == excerpt]
    assert starts, f"{source}: the block for {file} is not a verbatim excerpt of it"
