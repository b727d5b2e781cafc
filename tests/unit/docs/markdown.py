"""Just enough Markdown reading for the doc tests: fenced blocks, headings and their GitHub
anchors, and links. Not a renderer: it reads what GitHub's renderer would make a link or an
anchor, for the documents this repository writes (CommonMark fences, ATX headings)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^()\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_COMMENT = re.compile(r"<!--\s*(.*?)\s*-->")


@dataclass(frozen=True, slots=True)
class Block:
    """A fenced code block: its info string (``sh``, ``yaml`` ...), body, the line it opens on
    and the HTML comment on the nearest non-blank line before it, if any."""

    info: str
    body: str
    line: int
    comment: str | None


@dataclass(frozen=True, slots=True)
class Link:
    target: str
    line: int


def _closes(match: re.Match[str] | None, fence: str) -> bool:
    """Whether a fence line closes the block ``fence`` opened: same character, at least as
    long, no info string."""
    return (
        match is not None
        and match.group(1)[0] == fence[0]
        and len(match.group(1)) >= len(fence)
        and not match.group(2).strip()
    )


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if _closes(match, fence):
                fence = None
            continue
        out.append((number, line))
    return out


def blocks(text: str) -> list[Block]:
    """Every fenced code block, in order."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match.group(1), match.group(2).strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            if _closes(_FENCE.match(lines[i]), fence):
                break
            body.append(lines[i])
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        comment = _COMMENT.fullmatch(previous.strip())
        indent = len(lines[start]) - len(lines[start].lstrip(" "))
        text_body = "\n".join(line[indent:] if line[:indent].isspace() else line for line in body)
        found.append(Block(info, text_body, start + 1, comment.group(1) if comment else None))
        i += 1
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower-case, inline markup and punctuation dropped
    (letters, digits, marks, ``-`` and ``_`` stay), each space a hyphen."""
    text = _INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.lower()
    kept = [
        c
        for c in text
        if c in " -_" or unicodedata.category(c)[0] in ("L", "N") or unicodedata.category(c) == "Mn"
    ]
    return "".join(kept).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor GitHub creates in a document: one per heading (repeats get ``-1``, ``-2``
    ...) and explicit ``<a name>``/``<a id>`` tags."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(text):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[Link]:
    """Every link and image target outside code (fenced blocks and inline code spans); a link's
    text may run over several lines."""
    kept = dict(prose_lines(text))
    lines = text.splitlines()
    prose = "\n".join(kept.get(n, "") for n in range(1, len(lines) + 1))
    found: list[Link] = []
    for number, line in enumerate(prose.splitlines(), start=1):
        reference = _REFERENCE.match(line)
        if reference:
            found.append(Link(reference.group(1), number))
    # Inline code may not contain a blank line; blank it out, keeping the line breaks.
    plain = re.sub(
        r"(`+)(?:(?!\n\s*\n).)+?\1",
        lambda m: re.sub(r"[^\n]", " ", m.group(0)),
        prose,
        flags=re.DOTALL,
    )
    for match in _LINK.finditer(plain):
        found.append(Link(match.group(2), plain.count("\n", 0, match.start(2)) + 1))
    return found
