"""Verify ztauthz's signed identity assertion in an upstream, with PyJWT.

python verify_assertion.py JWKS_URL ISSUER AUDIENCE < assertion   # prints the claims
"""

import json
import sys

import jwt

ALGORITHMS = ["ES256", "EdDSA", "RS256"]  # what ztauthz signs with: never "none" or HMAC
ASSERTION_TYPE = "ztauthz-assertion+jwt"


def verifier(jwks_url: str) -> jwt.PyJWKClient:
    # Keeps the key set for 5 minutes and fetches it again when a token names a new kid.
    return jwt.PyJWKClient(jwks_url, lifespan=300)


def verify_assertion(token: str, keys: jwt.PyJWKClient, issuer: str, audience: str) -> dict:
    if jwt.get_unverified_header(token).get("typ") != ASSERTION_TYPE:
        raise jwt.InvalidTokenError("not a ztauthz identity assertion")
    return jwt.decode(
        token,
        keys.get_signing_key_from_jwt(token),
        algorithms=ALGORITHMS,
        issuer=issuer,  # assertion.issuer in ztauthz's configuration
        audience=audience,  # this upstream's name (assertion.audience or a route's)
        leeway=5,  # seconds of clock skew tolerated
        options={"require": ["iss", "aud", "iat", "exp", "jti"]},
    )


if __name__ == "__main__":
    jwks_url, issuer, audience = sys.argv[1:4]
    claims = verify_assertion(sys.stdin.read().strip(), verifier(jwks_url), issuer, audience)
    print(json.dumps(claims, sort_keys=True))
