"""Every command shown in the docs is either run by tests/integration/test_documented_commands.py
or says why not: shell blocks are ``sh`` or ``console``, and a block that cannot run here is
marked ``<!-- not-run: reason -->``."""

from __future__ import annotations

from pathlib import Path

from tests.unit.docs import markdown
from tests.unit.docs.commands import ShellBlock, missing_lines, shell_blocks
from tests.unit.docs.docs_support import documents, relative


def test_prompts_are_only_in_console_blocks() -> None:
    # A `$ command` in a plain block would be neither run nor marked.
    unclassified = [
        f"{relative(doc)}:{block.line}"
        for doc in documents()
        for block in markdown.blocks(doc.read_text(encoding="utf-8"))
        if block.info not in ("sh", "console")
        and any(line.startswith("$ ") for line in block.body.splitlines())
    ]
    assert unclassified == []


def test_a_not_run_mark_gives_its_reason() -> None:
    unexplained = [
        f"{relative(doc)}:{block.line}"
        for doc in documents()
        for block in markdown.blocks(doc.read_text(encoding="utf-8"))
        if block.comment is not None
        and block.comment.startswith("not-run")
        and not block.comment.partition(":")[2].strip()
    ]
    assert unexplained == []


def test_console_blocks_have_commands() -> None:
    empty = [b.where for b in shell_blocks() if b.info == "console" and not b.commands()]
    assert empty == []


def test_blocks_marks_and_commands_are_read(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Intro.\n\n<!-- not-run: needs a cluster -->\n```sh\nkubectl apply -k x\n```\n\n"
        "1. A step:\n\n   ```console\n   $ A=$(echo one \\\n       two)\n   $ echo $A\n"
        "   one two\n   ...\n   ```\n"
    )
    blocks = shell_blocks([doc])
    assert [(b.info, b.not_run) for b in blocks] == [
        ("sh", "needs a cluster"),
        ("console", None),
    ]
    commands = blocks[1].commands()
    assert [c.text for c in commands] == ["A=$(echo one \\\n    two)", "echo $A"]
    assert commands[1].shown == ("one two", "...")


def test_shown_lines_match_with_wildcards() -> None:
    printed = (
        'HTTP/1.1 403 Forbidden\n{"decision":"deny","reason":"denied_by_rule","decision_id":"ab"}\n'
    )
    shown = ("HTTP/1.1 403 Forbidden", '{"decision":"deny","reason":"denied_by_rule",...}', "...")
    assert missing_lines(shown, printed) == []
    assert missing_lines(("HTTP/1.1 200 OK",), printed) == ["HTTP/1.1 200 OK"]
    # A shown line is a whole line, not a fragment of one.
    assert missing_lines(("403",), printed) == ["403"]


def test_every_shell_block_is_classified() -> None:
    blocks: list[ShellBlock] = shell_blocks()
    assert {b.info for b in blocks} <= {"sh", "console"}
    assert any(b.not_run for b in blocks) and any(b.not_run is None for b in blocks)
