"""The shell commands the docs show, as the doc tests run them.

Two kinds of fenced block hold commands:

- ```` ```sh ````: a script. It runs as one ``bash -e -o pipefail`` script and must exit 0.
- ```` ```console ````: a session. Lines starting with ``$ `` are commands (a line ending in
  ``\\`` continues on the next), the lines after one are what it prints. Each command must exit
  0 or 1 (ztauthz's "no": a deny, a failed test; curl never exits 1) and print every shown line
  (``...`` in a line matches anything; a line of ``...`` alone stands for lines left out).
  Commands of one block share one shell (a variable set by one is seen by the next).

A block preceded by ``<!-- not-run: reason -->`` is not run (it needs Docker, a cluster, ...);
the reason is required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.unit.docs import markdown
from tests.unit.docs.docs_support import documents, relative

SHELL_INFOS = frozenset({"sh", "console"})
_NOT_RUN = re.compile(r"not-run:\s*(\S.*)")


@dataclass(frozen=True, slots=True)
class Command:
    text: str
    shown: tuple[str, ...]  # the output lines the docs show after it


@dataclass(frozen=True, slots=True)
class ShellBlock:
    where: str  # file:line
    info: str
    body: str
    not_run: str | None  # the reason, when marked

    def commands(self) -> list[Command]:
        """The commands of a console block, each with the output lines shown after it."""
        found: list[Command] = []
        lines = self.body.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            parts = [lines[i][2:]]
            while parts[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                parts.append(lines[i])
            i += 1
            shown: list[str] = []
            while i < len(lines) and not lines[i].startswith("$ "):
                shown.append(lines[i])
                i += 1
            found.append(Command("\n".join(parts), tuple(line for line in shown if line.strip())))
        return found


def shell_blocks(docs: list[Path] | None = None) -> list[ShellBlock]:
    out: list[ShellBlock] = []
    for doc in documents() if docs is None else docs:
        for block in markdown.blocks(doc.read_text(encoding="utf-8")):
            if block.info not in SHELL_INFOS:
                continue
            reason = None
            if block.comment is not None:
                match = _NOT_RUN.fullmatch(block.comment)
                reason = match.group(1) if match else None
            out.append(ShellBlock(f"{relative(doc)}:{block.line}", block.info, block.body, reason))
    return out


def shown_line_matches(shown: str, printed: str) -> bool:
    """``shown`` (with ``...`` as a wildcard) is ``printed``, trailing spaces aside."""
    pattern = ".*".join(re.escape(part) for part in shown.rstrip().split("..."))
    return re.fullmatch(pattern, printed.rstrip()) is not None


def missing_lines(shown: tuple[str, ...], printed: str) -> list[str]:
    """The shown lines that no printed line matches (``...`` lines stand for anything)."""
    lines = printed.splitlines()
    return [
        line
        for line in shown
        if line.strip() != "..." and not any(shown_line_matches(line, p) for p in lines)
    ]
