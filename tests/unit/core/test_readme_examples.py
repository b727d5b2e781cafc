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
SOURCES = [ROOT / "README.md", ROOT / ".helpers" / "readme-issue4.md"]
BLOCK = re.compile(r"```yaml\n# (docs/examples/\S+)\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str, str]]:
    found = []
    for source in SOURCES:
        if source.is_file():
            for match in BLOCK.finditer(source.read_text(encoding="utf-8")):
                found.append((source.name, match.group(1), match.group(2)))
    return found


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
