"""The JWS reader's JSON: I-JSON only (RFC 7493), and what it accepts it reads exactly as
Python's parser does, so a claim never reads differently depending on the path."""

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
    b'{"n": -123456789012345678901234567890}',
    b'{"n": [1, {"m": 99999999999999999999999}]}',
    b'{"n": 1e300}',
    b'{"n": -0.0}',
    b'{"n": 0.1}',
    b'{"n": 2.5e-324}',
    b'{"s": "\\u00e9\\ud83d\\ude00"}',
    b'{"jti": "1234567890123456789012"}',
    b'{"nested": {"groups": ["a", "b"], "x": [1, 2.0, true, null]}}',
    b'{"a": ":x", "b": "y\\":"}',  # string values ending like member names
    b'{"a" : 1, "b"\t:\n2}',  # whitespace between names and colons
    b'{"deep": ' + b"[" * 31 + b"]" * 31 + b"}",  # MAX_DEPTH levels in all
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


REFUSED = {
    "nan": b'{"n": NaN}',
    "infinity": b'{"n": Infinity}',
    "overflowing number": b'{"n": 1e400}',
    "lone surrogate": b'{"s": "\\ud800"}',
    "lone low surrogate": b'{"s": "a\\udc00b"}',
    "duplicate name": b'{"a": 1, "a": 2}',
    "duplicate nested name": b'{"x": {"sub": "a", "sub": "b"}}',
    "duplicate name in an array": b'{"x": [{"k": 1, "k": 1}]}',
    "duplicate behind whitespace": b'{"a" : 1, "a":2}',
    "utf-8 bom": b'\xef\xbb\xbf{"a": 1}',
    "utf-16": '{"a": 1}'.encode("utf-16"),
    "utf-16-le": '{"a": 1}'.encode("utf-16-le"),
    "utf-16-be": '{"a": 1}'.encode("utf-16-be"),
    "utf-32": '{"a": 1}'.encode("utf-32"),
    "invalid utf-8": b'{"a": "\xff"}',
    "overlong utf-8": b'{"a": "\xc0\xaf"}',
    "raw control character": b'{"a": "\x01"}',
    "trailing data": b'{"a": 1} {}',
    "too deep arrays": b'{"a": ' + b"[" * 32 + b"]" * 32 + b"}",
    "too deep objects": b'{"a": ' + b'{"a": ' * 32 + b"1" + b"}" * 33,
    "a thousand levels": b"[" * 1000 + b"]" * 1000,
    "a thousand open levels": b'{"a":' + b"[" * 1000,
    "ten thousand levels": b'{"a":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
}


@pytest.mark.parametrize("raw", REFUSED.values(), ids=REFUSED.keys())
def test_what_is_not_i_json_is_malformed(raw: bytes) -> None:
    """RFC 7519 §7.2, RFC 8259 §8.1, RFC 7493 §2: UTF-8, no lone surrogates, real numbers,
    unique names; and a bounded depth, refused without recursion."""
    with pytest.raises(TokenError) as caught:
        _object(raw, "payload")
    assert caught.value.reason is Reason.TOKEN_MALFORMED


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"{", b"\xff\xfe", b"{'a': 1}", b""])
def test_anything_but_a_json_object_is_malformed(raw: bytes) -> None:
    with pytest.raises(TokenError) as caught:
        _object(raw, "payload")
    assert caught.value.reason is Reason.TOKEN_MALFORMED
