"""What a change to watched files changes: names, sizes, modification times and inodes.

Shared by everything re-read when its files change (policies: app/reload.py; the assertion's
signing keys: app/assertion/). Symlinks are followed and hidden entries skipped, so a
Kubernetes ConfigMap or Secret update (an atomic swap of its ``..data`` link) counts as a change
of every visible file.
"""

from __future__ import annotations

from pathlib import Path

Fingerprint = tuple[tuple[str, int, int, int], ...]


def fingerprint(root: Path | None) -> Fingerprint:
    """The files under a directory, or the one file ``root`` names; empty when missing."""
    if root is None:
        return ()
    if root.is_file():
        try:
            stat = root.stat()
        except OSError:
            return ()
        return ((root.name, stat.st_mtime_ns, stat.st_size, stat.st_ino),)
    if not root.is_dir():
        return ()
    entries = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        try:
            stat = path.stat()
        except OSError:
            continue  # vanished between listing and stat: the next tick sees the result
        if path.is_file():
            entries.append((relative.as_posix(), stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(sorted(entries))
