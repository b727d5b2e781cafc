"""The HTTP side of token introspection: one POST per question, client-authenticated.

Requests go through Authlib's OAuth 2.0 client for httpx (``AsyncOAuth2Client.introspect_token``,
RFC 7662 §2.1: ``token`` and ``token_type_hint=access_token``, form-encoded), which
authenticates ztauthz as a confidential client:

- ``client_secret_basic`` (RFC 6749 §2.3.1): HTTP Basic with the client id and secret each
  *form-urlencoded first*, as the RFC says. Authlib sends them raw (it tried encoding and
  reverted, authlib/authlib#594; its maintainer's advice is to pass them encoded), so they are
  given to it encoded: a secret with ``+``, ``%`` or ``:`` then works with servers that decode
  as the RFC says (oidc-provider, Keycloak, ...). Secrets of unreserved characters, the usual
  kind, are the same either way.
- ``private_key_jwt`` (RFC 7523 §2.2 and §3, OIDC Core §9): a client assertion signed by
  Authlib's ``PrivateKeyJWT`` with the configured key (imported with joserfc, Authlib's JOSE
  library), ``iss``/``sub`` the client id, ``aud`` the issuer identifier (or the configured
  audience), a random ``jti``, and a lifetime of 60 s instead of Authlib's hour: it is
  signed for one request, sent at once, and a short one is worth less to anyone who sees it.

Every answer is bounded like every other fetch from an identity provider (discovery.py):
one total deadline, a byte limit enforced while reading, no redirects, and only ``200`` is
an answer. Anything else is an ``IntrospectionError`` (503 for the check, never an allow).
Secrets and tokens appear in no message and no log.

Deprecation warnings, deliberately: Authlib 1.9 marks its use of httpx as deprecated in favour
of httpx2 (a fork), emitting an ``AuthlibDeprecationWarning`` when its httpx client module
is imported. ztauthz keeps httpx: it is the one HTTP stack of the sidecar (discovery, JWKS,
evidence), with one TLS trust configuration, and Authlib's httpx path is still its supported
fallback. That one warning, matched by its message, is silenced at that one import; any other
deprecation (from Authlib or elsewhere) still surfaces, and pytest turns it into an error.
Authlib also adds a process-wide ``always`` filter for its deprecations when first imported;
importing it inside ``catch_warnings`` keeps that change out of the process's filters.
tests/unit/identity/test_introspection_client.py pins both.
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
from joserfc import jwk
from joserfc.errors import SecurityWarning

from app.identity.discovery import safe_url
from app.identity.introspection_response import IntrospectionError
from app.settings import ConfigError
from app.settings.introspection import Introspection

with warnings.catch_warnings():
    import authlib.deprecate  # noqa: F401 - first, so its global filter is undone on exit

    warnings.filterwarnings(
        "ignore", message=r"The httpx module is deprecated", category=DeprecationWarning
    )
    from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign

ASSERTION_LIFETIME = 60  # seconds
TOKEN_TYPE_HINT = "access_token"  # noqa: S105 - RFC 7662 §2.1 names the token kind
_MIN_RSA_BITS = 2048
_MIN_SECRET_CHARS = 1

PrivateKey = jwk.RSAKey | jwk.ECKey | jwk.OKPKey

# The key type (and curves) each assertion algorithm signs with (RFC 7518 §3, RFC 9864 §2.2).
_KEY_FOR_ALG: dict[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "Ed25519": ("OKP", frozenset({"Ed25519"})),
    "Ed448": ("OKP", frozenset({"Ed448"})),
}


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What authenticates ztauthz at one introspection endpoint. Never printed."""

    client_id: str
    secret: str | None = field(default=None, repr=False)
    key: PrivateKey | None = field(default=None, repr=False)


def load_credentials(
    where: str, settings: Introspection, environ: Mapping[str, str] | None = None
) -> ClientCredentials:
    """Read the secret or private key ``settings`` names; ConfigError naming ``where`` (the
    key path, e.g. ``issuers[0].introspection``) and the file or variable, never the value."""
    env = os.environ if environ is None else environ
    if settings.auth == "client_secret_basic":
        if settings.client_secret_env is not None:
            name = settings.client_secret_env
            secret = env.get(name, "").strip()
            if len(secret) < _MIN_SECRET_CHARS:
                raise ConfigError(
                    [f"{where}.client_secret_env: environment variable {name} is empty or unset"]
                )
        else:
            assert settings.client_secret_file is not None  # the settings model checked it
            secret = _read(where, "client_secret_file", settings.client_secret_file).strip()
            if not secret:
                raise ConfigError(
                    [f"{where}.client_secret_file: {settings.client_secret_file} is empty"]
                )
        return ClientCredentials(settings.client_id, secret=secret)
    assert settings.private_key_file is not None  # the settings model checked it
    text = _read(where, "private_key_file", settings.private_key_file)
    key = _private_key(
        f"{where}.private_key_file", settings.private_key_file, text, settings.signing_alg
    )
    return ClientCredentials(settings.client_id, key=key)


def _read(where: str, name: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{where}.{name}: cannot read {path}: {reason}"]) from None


def _private_key(where: str, path: Path, text: str, alg: str) -> PrivateKey:
    """A private PEM or JWK key that can sign with ``alg``; ConfigError otherwise."""
    kty, curves = _KEY_FOR_ALG[alg]
    try:
        data: Any = json.loads(text) if text.lstrip().startswith("{") else text
        with warnings.catch_warnings():
            # joserfc warns about short RSA keys; they are refused below, with the file named.
            warnings.simplefilter("ignore", SecurityWarning)
            key = jwk.import_key(data, None if isinstance(data, dict) else kty)  # type: ignore[arg-type]
    except Exception:
        # No detail: a parser's message could quote key material.
        raise ConfigError([f"{where}: {path} is not a {kty} private key (PEM or JWK)"]) from None
    if not isinstance(key, jwk.RSAKey | jwk.ECKey | jwk.OKPKey) or key.key_type != kty:
        raise ConfigError([f"{where}: {path} is not a {kty} key, which signing_alg {alg} needs"])
    if not key.is_private:
        raise ConfigError([f"{where}: {path} holds a public key; the private key is needed"])
    if curves is not None and key.as_dict(private=False).get("crv") not in curves:
        raise ConfigError([f"{where}: {path}: the key's curve does not suit {alg}"])
    if isinstance(key, jwk.RSAKey) and key.raw_value.key_size < _MIN_RSA_BITS:
        raise ConfigError([f"{where}: {path}: RSA keys must have at least {_MIN_RSA_BITS} bits"])
    return key


class _ShortLivedPrivateKeyJWT(PrivateKeyJWT):  # type: ignore[misc] # Authlib is untyped
    """Authlib's ``private_key_jwt`` with a 60 s assertion and a fixed audience."""

    def __init__(self, audience: str, alg: str, key_id: str | None) -> None:
        super().__init__(
            token_endpoint=audience, headers={"kid": key_id} if key_id else None, alg=alg
        )

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            header=dict(self.headers) if self.headers else None,
            expires_in=ASSERTION_LIFETIME,
        )


class _LimitedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, max_bytes: int, where: str) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._where = where

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._max_bytes:
                raise IntrospectionError(
                    f"{self._where}: answer larger than {self._max_bytes} bytes"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BoundedTransport(httpx.AsyncBaseTransport):
    """Stops reading an answer past ``max_bytes`` (Authlib reads the whole body)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, max_bytes: int, where: str) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._where = where

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            await response.aclose()
            raise IntrospectionError(f"{self._where}: answer larger than {self._max_bytes} bytes")
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _LimitedStream(stream, self._max_bytes, self._where)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class IntrospectionClient:
    """Asks one issuer's introspection endpoint; one connection pool, closed with ``aclose``."""

    def __init__(
        self,
        issuer: str,
        settings: Introspection,
        credentials: ClientCredentials,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests); the byte limit wraps it either way."""
        self._timeout = settings.timeout.total_seconds()
        self._where = f"introspection for issuer {safe_url(issuer)}"
        inner = (
            transport
            if transport is not None
            else httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=settings.max_in_flight)
            )
        )
        common: dict[str, Any] = {
            "transport": _BoundedTransport(inner, settings.max_bytes, self._where),
            "timeout": self._timeout,
            "follow_redirects": False,
            "trust_env": False,
            "headers": {"accept": "application/json"},
        }
        if credentials.key is not None:
            audience = settings.assertion_audience or issuer
            method = _ShortLivedPrivateKeyJWT(audience, settings.signing_alg, settings.key_id)
            self._client = AsyncOAuth2Client(
                credentials.client_id, credentials.key, token_endpoint_auth_method=method, **common
            )
        else:
            assert credentials.secret is not None
            # RFC 6749 §2.3.1: form-urlencoded, then Basic (see the module docstring).
            self._client = AsyncOAuth2Client(
                quote_plus(credentials.client_id, safe=""),
                quote_plus(credentials.secret, safe=""),
                token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
                **common,
            )

    async def ask(self, endpoint: str, token: str) -> Any:
        """The endpoint's JSON answer about ``token``; IntrospectionError on any failure."""
        where = f"{self._where} at {safe_url(endpoint)}"
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.introspect_token(
                    endpoint, token=token, token_type_hint=TOKEN_TYPE_HINT
                )
        except TimeoutError:
            raise IntrospectionError(f"{where}: no answer within {self._timeout:g}s") from None
        except IntrospectionError:
            raise
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise IntrospectionError(f"{where}: {type(exc).__name__}") from None
        if response.status_code != 200:
            # RFC 7662 §2.3: 401 when our client authentication failed; never an answer.
            raise IntrospectionError(f"{where}: HTTP {response.status_code}, expected 200")
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):
            raise IntrospectionError(f"{where}: the answer is not JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()
