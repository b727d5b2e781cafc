"""The JWS reader's JSON: orjson where it reads exactly what Python's parser reads, Python's
parser everywhere else, so a claim never reads differently depending on the path."""

from __future__ import annotations

import json
import math
import random

import pytest

from app.identity.errors import TokenError
from app.identity.jws import _loads, _object
from app.reasons import Reason


def same(a: object, b: object) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0 here; NaN is NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


TRICKY = [
    b'{"exp": 1700000000}',
    b'{"exp": 1700000000.5}',
    b'{"n": 9223372036854775807}',
    b'{"n": 18446744073709551615}',
    b'{"n": 18446744073709551616}',
    b'{"n": -9223372036854775809}',
    b'{"n": 123456789012345678901234567890}',
    b'{"n": 1e400}',
    b'{"n": -0.0}',
    b'{"n": 0.1}',
    b'{"n": 2.5e-324}',
    b'{"n": NaN}',
    b'{"n": Infinity}',
    b'{"s": "\\ud800"}',
    b'{"s": "\\u00e9\\ud83d\\ude00"}',
    b'{"a": 1, "a": 2}',
    b'{"jti": "1234567890123456789012"}',
    b'{"nested": {"groups": ["a", "b"], "x": [1, 2.0, true, null]}}',
]


@pytest.mark.parametrize("raw", TRICKY)
def test_reads_exactly_what_pythons_parser_reads(raw: bytes) -> None:
    assert same(_loads(raw), json.loads(raw))


def test_random_documents_read_the_same() -> None:
    rng = random.Random(7)

    def value(depth: int) -> object:
        kind = rng.randrange(7 if depth < 3 else 5)
        if kind == 0:
            return rng.randrange(-(10 ** rng.randrange(1, 25)), 10 ** rng.randrange(1, 25))
        if kind == 1:
            return rng.uniform(-1e6, 1e6) * 10 ** rng.randrange(-30, 30)
        if kind == 2:
            return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(12)))
        if kind == 3:
            return rng.choice([True, False, None])
        if kind == 4:
            return str(rng.randrange(10**30))
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(4))}

    for _ in range(2_000):
        document = {f"c{i}": value(0) for i in range(rng.randrange(1, 8))}
        raw = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()
        assert same(_loads(raw), json.loads(raw)), raw


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"{", b"\xff\xfe", b"{'a': 1}", b""])
def test_anything_but_a_json_object_is_malformed(raw: bytes) -> None:
    with pytest.raises(TokenError) as caught:
        _object(raw, "payload")
    assert caught.value.reason is Reason.TOKEN_MALFORMED
