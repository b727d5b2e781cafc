// Verify ztauthz's signed identity assertion in an upstream, with jose (Node.js).
//
//     node verify-assertion.mjs JWKS_URL ISSUER AUDIENCE < assertion   # prints the claims
import { readFileSync } from "node:fs";
import { createRemoteJWKSet, jwtVerify } from "jose";

// Caches the key set and fetches it again when a token names a new kid.
const [jwksUrl, issuer, audience] = process.argv.slice(2);
const keys = createRemoteJWKSet(new URL(jwksUrl));

export async function verifyAssertion(token) {
  const { payload } = await jwtVerify(token, keys, {
    algorithms: ["ES256", "EdDSA", "RS256"], // never "none" or HMAC
    typ: "ztauthz-assertion+jwt",
    issuer, // assertion.issuer in ztauthz's configuration
    audience, // this upstream's name (assertion.audience or a route's)
    clockTolerance: 5, // seconds of clock skew tolerated
    requiredClaims: ["iat", "exp", "jti"],
  });
  return payload;
}

const claims = await verifyAssertion(readFileSync(0, "utf8").trim());
console.log(JSON.stringify(claims));
