"""The signed identity assertion for the upstream, and the JWKS that verifies it.

With ``assertion.enabled``, every allow carries one JWT header (``x-auth-assertion`` by
default) that says who was allowed, to which upstream, on what evidence and by which decision,
signed with a key only ztauthz holds. The plain ``x-auth-*`` headers are trustworthy only if
the upstream can be reached through Envoy alone; the assertion is trustworthy wherever it
arrives, because the upstream checks its signature against the keys published on the admin
listener (``/.well-known/jwks.json``).

- ``keys``: PEM key files, ``kid``, algorithms, the JWKS, which key signs (rotation);
- ``claims``: the claims, a pure function of the decision;
- ``audience``: the ``aud`` of a request (``assertion.audience`` and ``assertion.routes``);
- ``signer``: signing on the hot path with reuse, and re-reading the keys when they change.

See docs/identity-assertion.md.
"""

from app.assertion.signer import ASSERTION_TYPE, AssertionSigner

__all__ = ["ASSERTION_TYPE", "AssertionSigner"]
