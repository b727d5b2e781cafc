// Test-only OpenID provider for ztauthz interoperability tests.
//
// Runs the certified `oidc-provider` package on loopback with the client_credentials grant and
// RFC 8707 resource indicators, issuing RFC 9068 JWT access tokens. Each resource server signs
// with its own algorithm, so one provider exercises both RS256 and ES256 verification. One more
// resource gets opaque access tokens, for RFC 7662 introspection (enabled, with RFC 7009
// revocation) by two resource-server clients of ztauthz: one with client_secret_basic, one with
// private_key_jwt.
//
// Usage: node provider.mjs [PORT]     (PORT, or env INTEROP_PORT; 0 or unset = ephemeral)
// Env:   INTEROP_CLIENT_SECRET        secret shared by the test clients (required)
//        INTEROP_INTROSPECTOR_SECRET  secret of ztauthz-introspector-basic (optional)
//        INTEROP_INTROSPECTOR_JWKS    public JWKS of ztauthz-introspector-jwt (optional, JSON)
//
// Prints exactly one line `READY http://127.0.0.1:<port>` once listening; exits 0 on SIGTERM.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const TOKEN_TTL_SECONDS = 300;

const CLIENT_IDS = ['interop-client-a', 'interop-client-b'];
// The resource server's clients: they may introspect every token, and nothing else.
const INTROSPECTOR_BASIC = 'ztauthz-introspector-basic';
const INTROSPECTOR_JWT = 'ztauthz-introspector-jwt';
const INTROSPECTORS = new Set([INTROSPECTOR_BASIC, INTROSPECTOR_JWT]);

// Resource indicator -> how its access tokens are shaped. The audience is the indicator itself.
// The "unrelated" resource has the same scopes, so only its audience tells its tokens apart.
const SCOPE = 'invoices:read invoices:write';
const RESOURCES = {
  'https://invoices-rs256.interop.test/': { alg: 'RS256', scope: SCOPE },
  'https://invoices-es256.interop.test/': { alg: 'ES256', scope: SCOPE },
  'https://unrelated.interop.test/': { alg: 'RS256', scope: SCOPE },
  'https://invoices-opaque.interop.test/': { format: 'opaque', scope: SCOPE },
};

function signingKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  // No kid: oidc-provider derives one from the key's RFC 7638 thumbprint.
  return [
    { ...rsa.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' },
    { ...ec.export({ format: 'jwk' }), use: 'sig', alg: 'ES256' },
  ];
}

function introspectors(secret, jwks) {
  const clients = [];
  const common = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [] };
  if (secret) {
    clients.push({
      ...common,
      client_id: INTROSPECTOR_BASIC,
      client_secret: secret,
      token_endpoint_auth_method: 'client_secret_basic',
    });
  }
  if (jwks) {
    clients.push({
      ...common,
      client_id: INTROSPECTOR_JWT,
      jwks: JSON.parse(jwks),
      token_endpoint_auth_method: 'private_key_jwt',
    });
  }
  return clients;
}

function configuration(clientSecret, introspectorSecret, introspectorJwks) {
  return {
    clients: [
      ...CLIENT_IDS.map((clientId) => ({
        client_id: clientId,
        client_secret: clientSecret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      })),
      ...introspectors(introspectorSecret, introspectorJwks),
    ],
    jwks: { keys: signingKeys() },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          const resource = RESOURCES[resourceIndicator];
          if (!resource) {
            throw new errors.InvalidTarget();
          }
          if (resource.format === 'opaque') {
            return {
              audience: resourceIndicator,
              scope: resource.scope,
              accessTokenFormat: 'opaque',
              accessTokenTTL: TOKEN_TTL_SECONDS,
            };
          }
          return {
            audience: resourceIndicator,
            scope: resource.scope,
            accessTokenFormat: 'jwt',
            accessTokenTTL: TOKEN_TTL_SECONDS,
            jwt: { sign: { alg: resource.alg } },
          };
        },
      },
      // RFC 7662: ztauthz's clients may introspect any token; a client, its own tokens.
      introspection: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => (
          INTROSPECTORS.has(client.clientId) || token.clientId === client.clientId
        ),
      },
      // RFC 7009: a client revokes its own tokens (what the tests do to a token they hold).
      revocation: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
      },
    },
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? TOKEN_TTL_SECONDS,
    },
    // Never called for client_credentials, but the default warns when it is not replaced.
    findAccount: async () => undefined,
  };
}

function main() {
  const clientSecret = process.env.INTEROP_CLIENT_SECRET;
  if (!clientSecret) {
    console.error('INTEROP_CLIENT_SECRET must be set');
    process.exit(2);
  }
  const requested = Number.parseInt(process.argv[2] ?? process.env.INTEROP_PORT ?? '0', 10);
  if (!Number.isInteger(requested) || requested < 0 || requested > 65535) {
    console.error('the port must be an integer between 0 and 65535');
    process.exit(2);
  }

  const server = http.createServer();
  server.on('error', (error) => {
    console.error(`provider failed: ${error.message}`);
    process.exit(1);
  });
  // Listen first so an ephemeral port is known before the issuer (which contains it) is fixed.
  server.listen(requested, HOST, () => {
    const { port } = server.address();
    const issuer = `http://${HOST}:${port}`;
    const provider = new Provider(
      issuer,
      configuration(
        clientSecret,
        process.env.INTEROP_INTROSPECTOR_SECRET,
        process.env.INTEROP_INTROSPECTOR_JWKS,
      ),
    );
    server.on('request', provider.callback());
    console.log(`READY ${issuer}`);
  });

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
