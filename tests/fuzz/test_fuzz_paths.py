"""Path normalization and matching against the readings of common upstreams (readings.py).

The property the issue asks for: the decision for a path equals the decision for each of its
readings, or the path is refused. normalize_path gives a stronger one, checked first: a path
it accepts has one reading only, its own.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from hypothesis import example, given
from hypothesis import strategies as st

from app.identity.principal import Principal
from app.policy.evaluate import PolicyInput, evaluate
from app.policy.loader import load_policy_dir
from app.policy.normalize import PathRejected, normalize_path, normalize_path_by_rules
from app.reasons import Reason
from tests.fuzz.readings import distinct_readings, readings

POLICIES = load_policy_dir(Path(__file__).resolve().parents[1] / "integration" / "policies")
NOW = 1_700_000_000.0
FINANCE = Principal(
    issuer="https://idp.example.com",
    subject="alice",
    groups=frozenset({"finance"}),
    scopes=frozenset({"invoices:read"}),
    audience=("api",),
    expires_at=int(NOW) + 300,
    issued_at=int(NOW),
    claims={},
)

# The building blocks of hostile paths: every construct the issue names, its encodings, and
# the ordinary characters around them.
PIECES = [
    "/",
    "//",
    ".",
    "..",
    "...",
    ";",
    ";jsessionid=1",
    ";x=1",
    "%2e",
    "%2E",
    "%2e%2e",
    "%3b",
    "%3B",
    "%20",
    "%09",
    "%25",
    "%252e",
    "%2f",
    "%5c",
    "%00",
    "%c0%ae",
    "%C0%AF",
    "%u002e",
    "%uff0e",
    "\\",
    " ",
    "\t",
    "?",
    "#",
    "%3f",
    "%EF%BC%8E",  # U+FF0E fullwidth full stop
    "%EF%BC%8F",  # U+FF0F fullwidth solidus
    "%EF%BC%BC",  # U+FF3C fullwidth reverse solidus
    "%E2%80%A5",  # U+2025 two dot leader
    "%E2%80%A4",  # U+2024 one dot leader
    "%E2%88%95",  # U+2215 division slash
    "%E2%81%84",  # U+2044 fraction slash
    "%E2%88%96",  # U+2216 set minus
    "%E3%80%82",  # U+3002 ideographic full stop
    "%C2%A5",  # U+00A5 yen sign
    "%C2%A0",  # no-break space
    "%E2%80%8B",  # zero-width space
    "%EF%BD%81",  # U+FF41 fullwidth a
    "%C3%A9",  # é
    "e%CC%81",  # e + combining acute (NFD)
    "%E6%97%A5",  # 日
    "\uff0e",
    "\u2215",
    "é",
    "admin",
    "public",
    "internal",
    "invoices",
    "x",
    "A",
    "0",
    "-",
    "_",
    "~",
    "!",
    "=",
    ":",
    "@",
]

hostile_paths = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
# Mostly rooted, like a request-target; sometimes anything at all.
paths = st.one_of(
    hostile_paths.map(lambda p: "/" + p),
    hostile_paths,
    st.text(max_size=40).map(lambda p: "/" + p),
)


def outcome(raw: str) -> str | tuple[str, Reason]:
    try:
        return normalize_path(raw)
    except PathRejected as exc:
        assert exc.reason in (Reason.PATH_REJECTED, Reason.PATH_AMBIGUOUS)
        assert raw not in exc.detail or len(raw) < 2  # the detail never echoes the path
        return ("refused", exc.reason)


@given(paths)
@example("/public/..;/internal/x")
@example("/public/%2e%2e;/internal/x")
@example("/public/..%20/internal/x")
@example("/public/%EF%BC%8E%EF%BC%8E/internal/x")
@example("/public/..%E2%88%95internal/x")
@example("/public/%E2%80%A5/internal")
@example("/public/%c0%ae%c0%ae/internal")
@example("/public/%u002e%u002e/internal")
def test_an_accepted_path_has_one_reading_its_own(raw: str) -> None:
    """Whatever upstream reads it, a path ztauthz accepts is the path ztauthz matched."""
    result = outcome(raw)
    if isinstance(result, tuple):
        return
    assert result.startswith("/")
    seen = readings(raw)
    assert set(seen.values()) == {result}, seen


@given(paths)
def test_the_fast_path_decides_as_the_rules(raw: str) -> None:
    def by_rules() -> str | tuple[str, Reason]:
        try:
            return normalize_path_by_rules(raw)
        except PathRejected as exc:
            return ("refused", exc.reason)

    assert outcome(raw) == by_rules()


@given(paths, st.sampled_from(["GET", "DELETE"]), st.booleans())
@example("/public/..;/internal/x", "GET", False)
@example("/public;x=1/..;/internal/x", "GET", False)
@example("/public/..%3b/invoices", "GET", False)
def test_the_decision_equals_the_decision_of_every_reading_or_the_path_is_refused(
    raw: str, method: str, authenticated: bool
) -> None:
    principal = FINANCE if authenticated else None
    result = outcome(raw)
    if isinstance(result, tuple):
        return  # refused: 400, whatever any reading would get
    decided = evaluate(POLICIES, PolicyInput(method, "api.example.com", result), principal, NOW)
    for reading in distinct_readings(raw):
        # Each reading as a request of its own, percent-encoded as a client would send it.
        again = outcome(quote(reading, safe="/"))
        if isinstance(again, tuple):
            raise AssertionError(f"{raw!r} was accepted but its reading {reading!r} is refused")
        verdict = evaluate(POLICIES, PolicyInput(method, "api.example.com", again), principal, NOW)
        assert (verdict.allow, verdict.reason) == (decided.allow, decided.reason), reading


@given(paths)
def test_accepted_paths_are_stable(raw: str) -> None:
    """Normalizing the result again (percent-encoded) changes nothing."""
    result = outcome(raw)
    if not isinstance(result, tuple):
        assert outcome(quote(result, safe="/")) == result
