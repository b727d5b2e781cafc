"""Sender-constrained tokens: a token whose ``cnf`` claim binds it to a key or a certificate is
accepted only from the holder of that key or certificate. Enforced for every token that
carries ``cnf``, whatever the policies say (they may additionally require a binding).

- ``cnf.jkt`` (RFC 9449 §6.1): the token must come as ``Authorization: DPoP <token>`` with one
  valid proof (app/identity/dpop.py) whose key has that RFC 7638 thumbprint; the proof's
  ``jti`` is claimed in the replay cache (the shared store, so that several replicas refuse a
  replay to any of them), and with nonces configured the proof must carry a current one. A
  bound token presented as a bearer token is refused (§7.2), and so is a ``DPoP`` credential
  whose token is not bound to a key.
- ``cnf["x5t#S256"]`` (RFC 8705 §3): the client certificate Envoy verified must hash
  (SHA-256 of its DER, base64url) to that value; with no certificate, or another, the token
  is refused (§3.1: 401 ``invalid_token``). The certificate comes from the gRPC CheckRequest
  (Envoy's own fields), or over HTTP from ``x-forwarded-client-cert`` only when Envoy
  sanitizes and sets it (``evidence.client_certificate.envoy_forward_client_cert_details:
  SANITIZE_SET``, as for workload evidence).
- Any other ``cnf`` (``jwk``, ``jku``, ``kid``, ...) cannot be enforced here: refused.

The replay cache is the only step that may wait (one store round trip); when the store cannot
answer the proof is refused (``store_unavailable``, fail closed) and the store is marked down.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.evidence.xfcc import XfccError, parse_xfcc
from app.http_facts import DPOP, FORWARDED_CLIENT_CERT, FORWARDED_PROTO
from app.identity.confirmation import CNF, JKT, X5T_S256
from app.identity.dpop import (
    DpopError,
    ProofRequest,
    ProofRules,
    target_uri,
    verify_proof,
)
from app.identity.dpop_nonce import NonceIssuer
from app.identity.errors import TokenError
from app.identity.extract import Credential
from app.reasons import Reason
from app.request import RequestContext
from app.store import SharedStore, StoreUnavailable
from app.store.health import StoreHealth

log = logging.getLogger("ztauthz.binding")

REPLAY_NAMESPACE = "dpop-jti"


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What a token's ``cnf`` binds it to (RFC 7800 §3.1)."""

    jkt: str | None = None
    x5t_s256: str | None = None


def confirmation_of(claims: Mapping[str, Any]) -> Confirmation | None:
    """The token's binding, or None for a plain bearer token. Raises TokenError for a ``cnf``
    that is not an object, has members of the wrong type, or binds by a method not enforced
    here (refusing beats ignoring a binding the issuer asked for)."""
    cnf = claims.get(CNF)
    if cnf is None:
        return None
    if not isinstance(cnf, dict):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "cnf is not an object")
    jkt, x5t = cnf.get(JKT), cnf.get(X5T_S256)
    for name, value in ((JKT, jkt), (X5T_S256, x5t)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TokenError(Reason.TOKEN_CLAIMS_INVALID, f"cnf.{name} is not a string")
    if jkt is None and x5t is None:
        raise TokenError(Reason.TOKEN_BINDING_UNSUPPORTED, "cnf names no jkt or x5t#S256")
    return Confirmation(jkt=jkt, x5t_s256=x5t)


def request_scheme(ctx: RequestContext) -> str | None:
    """The scheme the client used, as Envoy saw it: ``x-forwarded-proto``, which Envoy sets
    from the downstream connection unless it trusts the hop before it (use_remote_address,
    xff_num_trusted_hops), else the gRPC CheckRequest's ``scheme`` attribute."""
    value = ctx.headers.get(FORWARDED_PROTO)
    if value is not None:
        value = value.strip().lower()
        return value if value in ("http", "https") else None
    return ctx.scheme


def certificate_thumbprint(ctx: RequestContext, trust_xfcc: bool) -> str | None:
    """base64url(SHA-256(DER)) of the client certificate Envoy verified, or None."""
    if ctx.peer_certificate is not None:
        return _pem_thumbprint(ctx.peer_certificate)
    if ctx.transport != "http" or not trust_xfcc:
        return None
    header = ctx.headers.get(FORWARDED_CLIENT_CERT)
    if header is None:
        return None
    try:
        elements = parse_xfcc(header)
    except XfccError:
        return None
    if len(elements) != 1:
        return None  # SANITIZE_SET leaves exactly one element: Envoy's own
    element = elements[0]
    if element.cert:
        return _pem_thumbprint(element.cert)
    if element.hash:
        try:
            digest = bytes.fromhex(element.hash)  # Envoy: SHA-256 of the DER, hex
        except ValueError:
            return None
        if len(digest) == 32:
            return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return None


@lru_cache(maxsize=256)  # a client presents the same certificate on every request
def _pem_thumbprint(encoded_pem: str) -> str | None:
    try:
        certificate = x509.load_pem_x509_certificate(unquote(encoded_pem).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _replay_key(jkt: str, jti: str) -> str:
    """The replay cache's key for a proof: a digest, so the client-chosen jti never becomes a
    store key as such (bounded size, no odd characters)."""
    digest = hashlib.sha256(f"{jkt}\x00{jti}".encode()).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode("ascii")


class SenderBinding:
    """Enforces ``cnf`` on every verified token (``enforce``)."""

    def __init__(
        self,
        rules: ProofRules,
        store: SharedStore,
        health: StoreHealth,
        *,
        nonces: NonceIssuer | None = None,
        trust_xfcc: bool = False,
    ) -> None:
        self.rules = rules
        self.algorithms = tuple(sorted(rules.algorithms))  # for the challenge's algs="..."
        self.nonces = nonces
        self._store = store
        self._health = health
        self._trust_xfcc = trust_xfcc
        # A jti is remembered as long as a proof carrying it could still be accepted.
        self._replay_ttl = rules.max_age + rules.leeway + 1.0

    def nonce(self, now: float) -> str | None:
        """The nonce to offer clients at ``now`` (None: nonces are off)."""
        return None if self.nonces is None else self.nonces.current(now)

    async def enforce(
        self, ctx: RequestContext, credential: Credential, claims: Mapping[str, Any], now: float
    ) -> Confirmation | None:
        """Raise DpopError/TokenError unless the token's binding holds for this request."""
        confirmation = confirmation_of(claims)
        if credential.scheme == "dpop" and (confirmation is None or confirmation.jkt is None):
            raise DpopError(Reason.DPOP_TOKEN_UNBOUND, "DPoP scheme, but no cnf.jkt")
        if confirmation is None:
            return None
        if confirmation.jkt is not None:
            if credential.scheme != "dpop":
                raise DpopError(Reason.TOKEN_BOUND_AS_BEARER, "DPoP-bound token sent as bearer")
            await self._check_proof(ctx, credential.token, confirmation.jkt, now)
        if confirmation.x5t_s256 is not None:
            presented = certificate_thumbprint(ctx, self._trust_xfcc)
            if presented is None or not hmac.compare_digest(
                presented.encode("ascii"), confirmation.x5t_s256.encode("ascii", "replace")
            ):
                raise TokenError(
                    Reason.TOKEN_CERTIFICATE_MISMATCH,
                    "no client certificate" if presented is None else "another certificate",
                )
        return confirmation

    async def _check_proof(self, ctx: RequestContext, token: str, jkt: str, now: float) -> None:
        uri = target_uri(request_scheme(ctx), ctx.host, ctx.path.partition("?")[0])
        request = ProofRequest(method=ctx.method, uri=uri, access_token=token)
        proof = verify_proof(ctx.headers.get(DPOP), request, self.rules, now)
        if not hmac.compare_digest(proof.jkt.encode("ascii"), jkt.encode("ascii", "replace")):
            raise DpopError(Reason.DPOP_KEY_MISMATCH, "the proof key is not cnf.jkt")
        if self.nonces is not None and (
            proof.nonce is None or not self.nonces.accepts(proof.nonce, now)
        ):
            raise DpopError(Reason.DPOP_NONCE_REQUIRED, "no current server nonce")
        try:
            fresh = await self._store.add_once(
                REPLAY_NAMESPACE, _replay_key(proof.jkt, proof.jti), self._replay_ttl
            )
        except StoreUnavailable as exc:
            self._health.failed("dpop_replay", exc)
            raise TokenError(Reason.STORE_UNAVAILABLE, "replay cache unavailable") from None
        self._health.succeeded()
        if not fresh:
            raise DpopError(Reason.DPOP_PROOF_REPLAYED, "jti seen before")
