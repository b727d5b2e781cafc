"""Workload identity: the SPIFFE ID in the URI SAN of the caller's mTLS client certificate.

Sources, both established by Envoy's TLS handshake against the CA it trusts:

- gRPC ext_authz: ``attributes.source.principal`` (the certificate's URI SAN, else DNS SAN, else
  subject) and ``attributes.source.certificate`` (the PEM, with ``include_peer_certificate``);
  these are CheckRequest fields Envoy fills, not headers.
- HTTP ext_authz: the ``x-forwarded-client-cert`` element Envoy sets with
  ``forward_client_cert_details: SANITIZE_SET`` (trusted only when configured; see gather.py).

A SPIFFE ID is ``spiffe://<trust domain>/<path>`` (SPIFFE ID specification §2): a lower-case trust
domain of letters, digits, ``.``, ``-`` and ``_``; path segments of letters, digits, ``.``, ``-``
and ``_``, none empty, ``.`` or ``..``; no query, fragment, port or user info.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final
from urllib.parse import unquote

from cryptography import x509

from app.evidence.model import Workload, WorkloadSource

MAX_SPIFFE_ID: Final = 2048
_SPIFFE = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[A-Za-z0-9._-]+)*)")


def spiffe_trust_domain(uri: str) -> str | None:
    """The trust domain of a valid SPIFFE ID, or None when ``uri`` is not one."""
    if len(uri) > MAX_SPIFFE_ID:
        return None
    match = _SPIFFE.fullmatch(uri)
    if match is None:
        return None
    if any(segment in (".", "..") for segment in match.group(2).split("/")[1:]):
        return None
    return match.group(1)


def workload_from_uris(uris: Iterable[str], source: WorkloadSource) -> Workload | None:
    """The workload named by the first valid SPIFFE ID among ``uris``."""
    for uri in uris:
        domain = spiffe_trust_domain(uri)
        if domain is not None:
            return Workload(uri, domain, source)
    return None


@lru_cache(maxsize=256)  # a workload presents the same certificate on every request
def certificate_uris(encoded_pem: str) -> tuple[str, ...]:
    """The URI SANs of a certificate given as (URL-encoded) PEM; () when unparsable."""
    try:
        certificate = x509.load_pem_x509_certificate(unquote(encoded_pem).encode("ascii"))
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, UnicodeEncodeError, x509.ExtensionNotFound):
        return ()
    return tuple(names.value.get_values_for_type(x509.UniformResourceIdentifier))
