"""Development-only tooling: dev signing keys, a dev OIDC issuer, a token minter and forger,
and an echoing demo upstream.

These modules exist for the local demo stack and for tests. They are never imported by
``ztauthz serve``; nothing here is fit for production (keys live in plain files, the issuer
serves whatever keys it finds, and the forge helpers build deliberately invalid tokens).
"""
