// A CI system's OIDC token issuer for tether's workload-binding tests. Development
// only.
//
// A real `oidc-provider` issuer on 127.0.0.1 whose confidential clients are "jobs":
// each gets a JWT access token through the client-credentials grant (RFC 6749
// §4.4, resource indicators RFC 8707), signed RS256 with a key published at the
// issuer's JWKS, carrying `iss`, `sub` (the client id), `aud`, `exp`, `iat`, `jti`
// and the job's claims, shaped like GitHub Actions' (`repository`, `ref`).
//
// Jobs (client id = secret):
//   deploy-main   repository org/deploy, ref refs/heads/main, aud CI_AUDIENCE
//   other-repo    repository org/other,  ref refs/heads/main, aud CI_AUDIENCE
//   wrong-aud     repository org/deploy, ref refs/heads/main, aud https://elsewhere.example
//   short-lived   repository org/deploy, ref refs/heads/main, aud CI_AUDIENCE, 2 s token
//
// Environment:
//   CI_AUDIENCE   the audience (default https://gateway.tether.test)
//
// A token: POST <issuer>/token, HTTP Basic <job>:<job>, body
// grant_type=client_credentials&scope=ci — the JSON answer's access_token.
//
// Once listening it prints one line to stdout:
//   CI_READY http://127.0.0.1:<port>
// Everything else goes to stderr. SIGTERM/SIGINT stop it.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

console.log = console.error;
console.info = console.error;

const AUDIENCE = process.env.CI_AUDIENCE || 'https://gateway.tether.test';
const JOBS = {
  'deploy-main': { claims: { repository: 'org/deploy', ref: 'refs/heads/main' }, aud: AUDIENCE, ttl: 300 },
  'other-repo': { claims: { repository: 'org/other', ref: 'refs/heads/main' }, aud: AUDIENCE, ttl: 300 },
  'wrong-aud': { claims: { repository: 'org/deploy', ref: 'refs/heads/main' }, aud: 'https://elsewhere.example', ttl: 300 },
  'short-lived': { claims: { repository: 'org/deploy', ref: 'refs/heads/main' }, aud: AUDIENCE, ttl: 2 },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'ci-rs256', alg: 'RS256', use: 'sig' };

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: Object.keys(JOBS).map((id) => ({
      client_id: id,
      client_secret: id,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: [signingJwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['ci'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // One resource server, this audience: the job's token is a JWT for it.
        defaultResource: () => 'urn:tether:gateway',
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, _resource, client) => {
          const job = JOBS[client.clientId];
          return {
            scope: 'ci',
            audience: job.aud,
            accessTokenTTL: job.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    async extraTokenClaims(_ctx, token) {
      const job = JOBS[token.clientId];
      return job ? { ...job.claims } : {};
    },
  });
  provider.proxy = false;
  const callback = provider.callback();
  server.on('request', (req, res) => callback(req, res));
  process.stdout.write(`CI_READY ${issuer}\n`);
});

server.on('error', (err) => {
  console.error('ci: listen failed:', err.message);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
