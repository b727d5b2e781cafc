"""The documentation files the doc tests read: README.md, docs/, deploy/ and bench/ READMEs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def documents() -> list[Path]:
    """Every Markdown file a reader reaches from README.md, in a stable order."""
    found = [ROOT / "README.md", ROOT / "bench" / "README.md"]
    found += sorted((ROOT / "docs").glob("*.md"))
    found += sorted((ROOT / "deploy").rglob("*.md"))
    return found


def relative(path: Path) -> str:
    """The path as the repository names it (as given when it is outside, e.g. in a test)."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
