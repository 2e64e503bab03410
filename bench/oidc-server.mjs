// The peer, run as its own process (as the Writ broker is): oidc-provider issuing EdDSA JWT access tokens
// (RFC 9068 at+jwt) by client_credentials with a resource indicator. No audit of any kind. Prints its URL.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

export const CLIENT_ID = 'bench';
export const CLIENT_SECRET = 'bench-secret-0123456789abcdef';
const AUDIENCE = 'https://api.example';

const { privateKey } = generateKeyPairSync('ed25519');
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-ed25519', alg: 'EdDSA', use: 'sig' };

const server = createServer();
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(base, {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'EdDSA',
      scope: 'repo:read',
    },
  ],
  jwks: { keys: [jwk] },
  scopes: ['repo:read'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'repo:read',
        audience: AUDIENCE,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'EdDSA' } },
      }),
    },
  },
});
server.on('request', provider.callback());
process.stdout.write(`${base}\n`);
