// Prints one access token from the demo OpenID provider (client_credentials grant with an
// RFC 8707 resource indicator), and nothing else, so it can be captured:
//
//   TOKEN=$(docker compose exec -T oidc node /demo/token.mjs invoices:read)
//
// Usage: node token.mjs [SCOPE ...]        (default scope: invoices:read)
// Env:   OIDC_ISSUER            http://127.0.0.1:9400
//        OIDC_CLIENT_ID         interop-client-a
//        INTEROP_CLIENT_SECRET  the provider's client secret (required)
//        OIDC_RESOURCE          https://invoices-rs256.interop.test/ (the ES256 one also works)

const issuer = process.env.OIDC_ISSUER ?? 'http://127.0.0.1:9400';
const clientId = process.env.OIDC_CLIENT_ID ?? 'interop-client-a';
const secret = process.env.INTEROP_CLIENT_SECRET;
const resource = process.env.OIDC_RESOURCE ?? 'https://invoices-rs256.interop.test/';
const scopes = process.argv.slice(2);

function fail(message) {
  console.error(`token.mjs: ${message}`);
  process.exit(1);
}

if (!secret) {
  fail('INTEROP_CLIENT_SECRET must be set');
}

const discovery = await fetch(`${issuer}/.well-known/openid-configuration`).catch((e) => fail(e.message));
if (!discovery.ok) {
  fail(`discovery answered ${discovery.status}`);
}
const { token_endpoint: tokenEndpoint } = await discovery.json();

// client_secret_basic (RFC 6749 2.3.1): id and secret are form-encoded, then base64.
const basic = Buffer.from(
  `${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`,
).toString('base64');
const response = await fetch(tokenEndpoint, {
  method: 'POST',
  headers: {
    authorization: `Basic ${basic}`,
    'content-type': 'application/x-www-form-urlencoded',
  },
  body: new URLSearchParams({
    grant_type: 'client_credentials',
    scope: (scopes.length ? scopes : ['invoices:read']).join(' '),
    resource,
  }),
}).catch((e) => fail(e.message));
const body = await response.json().catch(() => ({}));
if (!response.ok || typeof body.access_token !== 'string') {
  fail(`the token endpoint answered ${response.status}: ${body.error ?? ''} ${body.error_description ?? ''}`);
}
console.log(body.access_token);
