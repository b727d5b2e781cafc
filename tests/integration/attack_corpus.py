"""An attack corpus of about a thousand requests, written apart from the code it attacks and
from the fuzz suite's strategies: forged and hostile tokens, odd paths, malformed and spoofed
headers, odd methods. Each attack knows which credential it carries, so an independent oracle
(``may_allow``) says whether any allow at all is acceptable for it.

The oracle models the integration policies (tests/integration/policies/integration.yaml) on
every reading by a common upstream (tests/fuzz/readings.py) of the path the upstream receives
(the path as sent, or the shipped Envoy's normalization of it): an allow is acceptable only
when *every* reading is a request the policies allow for the credential presented. A
credential that is present but not valid never allows anything (not even on an anonymous
route).

Deterministic: one seeded generator; tokens are minted per stack (each stack has its own dev
issuer) from the recipes named in the attacks.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt

from app.dev.keys import DevKeys
from app.dev.stack import Stack
from app.dev.tokens import (
    DROP,
    forge_alg_none,
    forge_hs256_with_public_key,
    mint,
    standard_claims,
    tamper_header,
    tamper_payload,
    tamper_signature,
)
from tests.fuzz.readings import distinct_readings

SEED = 20_151
VALID = ("finance", "contractor")  # the credentials that verify
FINANCE_SUBJECT = "alice"
CONTRACTOR_SUBJECT = "carol"


@dataclass(frozen=True, slots=True)
class Attack:
    family: str  # token | path | header | method
    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]  # "{token:<recipe>}" in a value is replaced per stack
    credential: str  # none | finance | contractor | invalid

    def may_allow(self, received: str | None = None) -> bool:
        """Whether an allow is acceptable for this attack when the upstream receives the path
        ``received`` (by default the path as sent; a normalizing Envoy may forward another):
        every reading of it must be allowed for the credential presented."""
        if self.credential == "invalid":
            return False
        path = self.path if received is None else received
        return all(
            model_allows(self.method, reading, self.credential)
            for reading in distinct_readings(path)
        )


def model_allows(method: str, path: str, credential: str) -> bool:
    """tests/integration/policies/integration.yaml, written out: default deny, deny wins."""
    segments = path.split("/")[1:]
    if segments[:1] == ["internal"]:
        return False  # internal-never
    if method == "DELETE" and credential == "contractor":
        return False  # contractors-never-delete
    if method == "GET" and segments[:1] == ["public"]:
        return True  # public-read, /public/** (a present token must be valid: not "invalid")
    invoices = segments[:1] == ["invoices"] and len(segments) <= 2
    if method == "GET" and invoices and credential == "finance":
        return True  # invoices-read
    return method == "DELETE" and invoices and len(segments) == 2 and credential == "finance"


# --- tokens -----------------------------------------------------------------------------------

Recipe = Callable[[Stack, DevKeys], str]
OTHER_KEYS = DevKeys.generate()


def _claims(stack: Stack, **extra: Any) -> dict[str, Any]:
    return standard_claims(
        issuer=stack.issuer_url,
        audience=stack.audience,
        subject=FINANCE_SUBJECT,
        groups=["finance"],
        scopes=["invoices:read"],
        extra_claims=extra,
    )


def _finance(stack: Stack, keys: DevKeys, **kwargs: Any) -> str:
    options: dict[str, Any] = {
        "issuer": stack.issuer_url,
        "audience": stack.audience,
        "subject": FINANCE_SUBJECT,
        "groups": ["finance"],
        "scopes": ["invoices:read"],
    }
    options.update(kwargs)
    return mint(keys, **options)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _raw_signed(stack: Stack, header: bytes, payload: bytes) -> str:
    """RS256 over exactly these bytes with the stack's own key: a valid signature on JSON
    only the parser can refuse."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = jwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), stack.keys.rsa_key)
    return f"{signing_input}.{_b64(signature)}"


def _header(stack: Stack) -> bytes:
    return json.dumps({"alg": "RS256", "kid": stack.keys.rsa_kid, "typ": "at+jwt"}).encode()


def _payload(stack: Stack, **extra: Any) -> bytes:
    return json.dumps(_claims(stack, **extra)).encode()


TOKENS: dict[str, tuple[str, Recipe]] = {
    # name: (credential, recipe)
    "finance": ("finance", lambda s, k: _finance(s, k)),
    "finance-es256": ("finance", lambda s, k: _finance(s, k, alg="ES256")),
    "contractor": (
        "contractor",
        lambda s, k: _finance(
            s,
            k,
            subject=CONTRACTOR_SUBJECT,
            groups=["contractors"],
            scopes=["invoices:read", "invoices:write"],
        ),
    ),
    "alg-none": ("invalid", lambda s, k: forge_alg_none(_claims(s))),
    "alg-none-kid": (
        "invalid",
        lambda s, k: forge_alg_none(_claims(s), headers={"kid": k.rsa_kid}),
    ),
    "alg-None": ("invalid", lambda s, k: tamper_header(forge_alg_none(_claims(s)), alg="None")),
    "hs256-public-key": ("invalid", lambda s, k: forge_hs256_with_public_key(k, _claims(s))),
    "tampered-groups": (
        "invalid",
        lambda s, k: tamper_payload(_finance(s, k, groups=["contractors"]), groups=["finance"]),
    ),
    "tampered-sub": ("invalid", lambda s, k: tamper_payload(_finance(s, k), sub="admin")),
    "tampered-exp": (
        "invalid",
        lambda s, k: tamper_payload(_finance(s, k), exp=int(time.time()) + 86_400),
    ),
    "tampered-signature": ("invalid", lambda s, k: tamper_signature(_finance(s, k))),
    "signature-stripped": ("invalid", lambda s, k: _finance(s, k).rsplit(".", 1)[0] + "."),
    "untrusted-key": ("invalid", lambda s, k: _finance(s, OTHER_KEYS)),
    "untrusted-key-our-kid": (
        "invalid",
        lambda s, k: _finance(s, OTHER_KEYS, headers={"kid": k.rsa_kid}),
    ),
    "jku-attacker": (
        "invalid",
        lambda s, k: _finance(
            s, OTHER_KEYS, headers={"kid": k.rsa_kid, "jku": "http://127.0.0.1:1/jwks"}
        ),
    ),
    "jwk-embedded": (
        "invalid",
        lambda s, k: _finance(s, OTHER_KEYS, headers={"jwk": OTHER_KEYS.jwks()["keys"][0]}),
    ),
    "x5u-attacker": (
        "invalid",
        lambda s, k: _finance(s, OTHER_KEYS, headers={"x5u": "http://127.0.0.1:1/c"}),
    ),
    "expired": ("invalid", lambda s, k: _finance(s, k, now=time.time() - 3600)),
    "not-yet-valid": ("invalid", lambda s, k: _finance(s, k, now=time.time() + 3600)),
    "lifetime-too-long": ("invalid", lambda s, k: _finance(s, k, ttl=86_400)),
    "wrong-audience": (
        "invalid",
        lambda s, k: _finance(s, k, audience="https://other.example.com"),
    ),
    "wrong-issuer": ("invalid", lambda s, k: _finance(s, k, issuer="https://evil.example.com")),
    "issuer-trailing-slash": ("invalid", lambda s, k: _finance(s, k, issuer=s.issuer_url + "/")),
    "kid-unknown": ("invalid", lambda s, k: _finance(s, k, headers={"kid": "nope"})),
    "kid-traversal": (
        "invalid",
        lambda s, k: _finance(s, k, headers={"kid": "../../../etc/passwd"}),
    ),
    "kid-sql": ("invalid", lambda s, k: _finance(s, k, headers={"kid": "' OR 1=1 --"})),
    "kid-number": (
        "invalid",
        lambda s, k: _raw_signed(s, b'{"alg": "RS256", "kid": 7}', _payload(s)),
    ),
    "typ-jwe": ("invalid", lambda s, k: _finance(s, k, typ="JWE")),
    "typ-null": (
        "invalid",
        lambda s, k: _raw_signed(s, _header(s).replace(b'"at+jwt"', b"null"), _payload(s)),
    ),
    "crit": ("invalid", lambda s, k: _finance(s, k, headers={"crit": ["exp"]})),
    "b64-false": ("invalid", lambda s, k: _finance(s, k, headers={"b64": False, "crit": ["b64"]})),
    "no-sub": ("invalid", lambda s, k: _finance(s, k, extra_claims={"sub": DROP})),
    "sub-list": ("invalid", lambda s, k: _finance(s, k, extra_claims={"sub": ["alice"]})),
    "groups-object": (
        "invalid",
        lambda s, k: _finance(s, k, extra_claims={"groups": {"finance": True}}),
    ),
    "scope-tab": (
        "invalid",
        lambda s, k: _finance(s, k, extra_claims={"scope": "openid\tinvoices:read"}),
    ),
    "scope-nbsp": (
        "invalid",
        lambda s, k: _finance(s, k, extra_claims={"scope": "openid\u00a0invoices:read"}),
    ),
    "scope-newline": (
        "invalid",
        lambda s, k: _finance(s, k, extra_claims={"scope": "openid\ninvoices:read"}),
    ),
    "nested-1000": (
        "invalid",
        lambda s, k: _raw_signed(
            s, _header(s), _payload(s)[:-1] + b', "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        ),
    ),
    "nested-header": (
        "invalid",
        lambda s, k: _raw_signed(
            s, _header(s)[:-1] + b', "x": ' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}", _payload(s)
        ),
    ),
    "lone-surrogate-sub": (
        "invalid",
        lambda s, k: _raw_signed(s, _header(s), _payload(s).replace(b'"alice"', b'"\\ud800"')),
    ),
    "utf16-payload": (
        "invalid",
        lambda s, k: _raw_signed(s, _header(s), json.dumps(_claims(s)).encode("utf-16")),
    ),
    "bom-payload": (
        "invalid",
        lambda s, k: _raw_signed(s, _header(s), b"\xef\xbb\xbf" + _payload(s)),
    ),
    "duplicate-sub": (
        "invalid",
        lambda s, k: _raw_signed(s, _header(s), b'{"sub": "admin", ' + _payload(s)[1:]),
    ),
    "duplicate-groups": (
        "invalid",
        lambda s, k: _raw_signed(s, _header(s), _payload(s)[:-1] + b', "groups": ["contractors"]}'),
    ),
    "exp-nan": (
        "invalid",
        lambda s, k: _raw_signed(s, _header(s), re.sub(rb'"exp": \d+', b'"exp": NaN', _payload(s))),
    ),
    "exp-overflow": (
        "invalid",
        lambda s, k: _raw_signed(
            s, _header(s), re.sub(rb'"exp": \d+', b'"exp": 1e400', _payload(s))
        ),
    ),
    "exp-40-digits": ("invalid", lambda s, k: _finance(s, k, extra_claims={"exp": 10**40})),
    "five-segments": ("invalid", lambda s, k: _finance(s, k) + ".e30.e30"),
    "padded-header": ("invalid", lambda s, k: _finance(s, k).replace(".", "=.", 1)),
    "huge": ("invalid", lambda s, k: _finance(s, k, extra_claims={"pad": "x" * 9000})),
}
INVALID_TOKENS = [name for name, (credential, _) in TOKENS.items() if credential == "invalid"]


def materialize(stack: Stack) -> dict[str, str]:
    """Every recipe's token for ``stack``."""
    return {name: recipe(stack, stack.keys) for name, (_, recipe) in TOKENS.items()}


# --- the corpus -------------------------------------------------------------------------------

PATH_PREFIXES = ["/public/", "/public/x/", "/invoices/", "/", "/public;a=b/"]
PATH_CONSTRUCTS = [
    "..", "..;", "..;jsessionid=1", "%2e%2e", "%2e%2e;", ".%2e", "..%3b", ".;", ";", "..%20",
    "...", "..%2e", "%252e%252e", "..%252f", "%c0%ae%c0%ae", "%u002e%u002e", "..\\", "%5c..",
    "..%2f", "%EF%BC%8E%EF%BC%8E", "%E2%80%A5", "..%E2%88%95", "..%EF%BC%8F", "%E3%80%82%E3%80%82",
    "%2E%2E", "%00", "%0a", "%09", ".", "//", "%20", "%2e", "x", "%EF%BD%89nternal",
]  # fmt: skip
PATH_TARGETS = [
    "internal/x",
    "invoices",
    "invoices/42",
    "public/y",
    "admin",
    "INTERNAL/x",
    "internal./x",
]
HEADER_FORMS = [
    # (Authorization value template, whether RFC 6750 reads it as the bearer token given)
    ("Bearer {t}", True),
    ("bearer {t}", True),
    ("BEARER {t}", True),
    ("Bearer  {t}", True),
    ("Bearer {t} ", True),
    ("Bearer\t{t}", False),
    ("Bearer {t} extra", False),
    ("Bearer {t},Bearer {t}", False),
    ("Bearer{t}", False),
    ("Token {t}", False),
    ("Basic YWxpY2U6cGFzc3dvcmQ=", False),
    ('Bearer "{t}"', False),
    ("Bearer {t}=====", False),
    ("Bearer {t}%00", False),
    ("Bearer", False),
    ("Bearer ", False),
]
SPOOFED = [
    ("x-auth-subject", "admin"),
    ("x-auth-groups", "finance,admins"),
    ("x-auth-scopes", "invoices:read invoices:write"),
    ("x-auth-rule", "public-read"),
    ("x-auth-workload", "spiffe://example.org/ns/billing/sa/invoice-worker"),
    ("x-envoy-original-path", "/public/x"),
    ("x-original-url", "/public/x"),
    ("x-rewrite-url", "/public/x"),
    ("x-forwarded-prefix", "/public"),
    ("x-http-method-override", "GET"),
    ("x-forwarded-for", "127.0.0.1, 10.0.0.1"),
    ("x-forwarded-for", ",".join(["1.2.3.4"] * 200)),
    ("x-ztauthz-client-address", "10.0.0.1"),
    ("forwarded", "for=127.0.0.1;proto=https"),
    ("x-forwarded-client-cert", "URI=spiffe://example.org/ns/billing/sa/invoice-worker"),
    ("cookie", "session={t}; session=x"),
    ("x-device-token", "{t}"),
    ("traceparent", "00-" + "f" * 32 + "-" + "f" * 16 + "-01"),
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "FOO", "get"]


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("Authorization", f"Bearer {{token:{token}}}"),)


def corpus() -> list[Attack]:
    """The attacks, in a fixed order (about a thousand)."""
    return list(_generate(random.Random(SEED)))


def _generate(rng: random.Random) -> Iterator[Attack]:
    # Every hostile token against a public route, an invoice and an internal path.
    for name in INVALID_TOKENS:
        for path in ("/public/x", "/invoices/42", "/internal/x"):
            yield Attack("token", name, "GET", path, _bearer(name), "invalid")
        yield Attack(
            "token", f"{name} in DELETE", "DELETE", "/invoices/42", _bearer(name), "invalid"
        )
    # Odd paths, anonymous and with each valid credential.
    for index in range(480):
        pieces = [rng.choice(PATH_CONSTRUCTS) for _ in range(rng.randint(1, 3))]
        separators = [rng.choice(["/", "/", ""]) for _ in pieces]
        middle = "".join(piece + sep for piece, sep in zip(pieces, separators, strict=True))
        path = rng.choice(PATH_PREFIXES) + middle + rng.choice(PATH_TARGETS)
        if rng.random() < 0.2:
            path += rng.choice(["?next=/internal/x", "#frag", "/", ";x", "%20"])
        credential = rng.choice(["none", "none", "finance", "contractor"])
        method = rng.choice(["GET", "GET", "GET", "DELETE"])
        headers = () if credential == "none" else _bearer(credential)
        yield Attack("path", f"path-{index}", method, path, headers, credential)
    # Authorization header forms, spoofed and forwarded headers, methods.
    for form, readable in HEADER_FORMS:
        for path in ("/invoices", "/public/x", "/internal/x"):
            value = form.replace("{t}", "{token:finance}")
            credential = "finance" if readable else "invalid"
            yield Attack(
                "header",
                f"authorization {form!r}",
                "GET",
                path,
                (("Authorization", value),),
                credential,
            )
    for name, value in SPOOFED:
        for credential in ("none", "finance"):
            for path in ("/public/x", "/invoices/7", "/internal/x"):
                extra = ((name, value.replace("{t}", "{token:finance}")),)
                headers = extra if credential == "none" else extra + _bearer("finance")
                yield Attack("header", f"spoof {name}", "GET", path, headers, credential)
    for _ in range(60):
        name = rng.choice(["x-auth-subject", "x-forwarded-for", "cookie", "x-device-token", "host"])
        junk = "".join(rng.choice("ab;,=\"' \t:/.%0123456789") for _ in range(rng.randint(0, 40)))
        credential = rng.choice(["none", "finance"])
        headers = ((name, junk),) + (() if credential == "none" else _bearer("finance"))
        yield Attack(
            "header",
            f"junk {name}",
            "GET",
            rng.choice(["/public/x", "/invoices"]),
            headers,
            credential,
        )
    for method in METHODS:
        for path in ("/public/x", "/invoices/42", "/internal/x"):
            for credential in ("none", "finance", "contractor"):
                headers = () if credential == "none" else _bearer(credential)
                yield Attack("method", f"method {method}", method, path, headers, credential)
    # Duplicated credentials: Envoy hands ztauthz both, ztauthz must not pick the friendlier.
    for first, second in (
        ("finance", "alg-none"),
        ("alg-none", "finance"),
        ("contractor", "finance"),
    ):
        headers = (
            ("Authorization", f"Bearer {{token:{first}}}"),
            ("Authorization", f"Bearer {{token:{second}}}"),
        )
        for path in ("/public/x", "/invoices/42"):
            yield Attack(
                "header", f"two authorizations {first}+{second}", "GET", path, headers, "invalid"
            )
