"""README examples are the files the tests run: each YAML block that starts with a
``# docs/examples/...`` line must be a verbatim excerpt of that file.

The files themselves are run by ``ztauthz policy test`` (test_cli_policy.py) and served behind
real Envoy (tests/integration/test_least_privilege.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
BLOCK = re.compile(r"```yaml\n# (docs/examples/\S+)\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str, str]]:
    text = README.read_text(encoding="utf-8")
    return [(README.name, m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def test_the_readme_shows_the_examples() -> None:
    shown = {file for _, file, _ in examples()}
    assert len(shown) >= 4, shown


EXAMPLES = examples()


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
