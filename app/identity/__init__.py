"""Identity: token extraction, OIDC discovery, JWKS key cache, JWT verification."""
