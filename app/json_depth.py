"""How deeply a JSON text nests, measured without parsing it (one definition, two users: the
JWS reader, app/identity/jws.py, and the injector's review reader, app/injector/mutate.py).

Parsers recurse (Python's ``json`` raises RecursionError about a thousand levels down, orjson
refuses beyond 1024), and so does much code that walks a parsed value: an untrusted text is
measured first, in one linear scan, and refused when it nests deeper than its reader allows.
"""

from __future__ import annotations

import re

# Strings (skipped whole, escapes included) and the brackets outside them.
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_OPENERS = frozenset(b"[{")
_QUOTE = 0x22


def nesting_depth(raw: bytes) -> int:
    """How many arrays and objects nest at the deepest point of ``raw`` (exact for JSON; for
    other text a number that is harmless to compare: it never raises, never recurses)."""
    depth = deepest = 0
    for match in _STRUCTURE.finditer(raw):
        char = match.group()[0]
        if char in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif char != _QUOTE:  # a closing bracket (a '"' opens a skipped string)
            depth -= 1
    return deepest


def may_nest_deeper(raw: bytes, limit: int) -> bool:
    """Whether ``raw`` might nest more than ``limit`` levels: a cheap count of brackets, true
    for every text that does (and for some that do not: then ask ``nesting_depth``)."""
    return raw.count(b"[") + raw.count(b"{") > limit
