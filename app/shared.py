"""One object for equal immutable values that many long-lived objects hold.

Sets of methods, groups and scopes repeat across thousands of compiled rules and cached
Principals; a frozenset costs 200 bytes or more, so keeping one per holder adds up (tens of
megabytes at 10,000 rules or 10,000 cached tokens). Sharing is an optimization only: the table
is bounded and simply starts over when full.
"""

from __future__ import annotations

_MAX = 65_536
_NAMES: dict[frozenset[str], frozenset[str]] = {}


def shared_names(names: frozenset[str]) -> frozenset[str]:
    """``names``, or the equal frozenset handed out before."""
    found = _NAMES.get(names)
    if found is None:
        if len(_NAMES) >= _MAX:
            _NAMES.clear()
        _NAMES[names] = found = names
    return found
