// The OpenID Connect provider used by tether's end-to-end tests. Development only.
//
// A real `oidc-provider` issuer on 127.0.0.1 with one static confidential client and
// static users, a plain HTML login form and automatic consent, so a browser flow
// is: relying party redirect -> login form -> submit -> redirect back to the callback.
//
// Environment:
//   IDP_PORT           listen port on 127.0.0.1; 0 (default) picks a free port
//   IDP_CLIENT_ID      client id (default "tether")
//   IDP_CLIENT_SECRET  client secret (default "tether-secret")
//   IDP_REDIRECT_URI   the relying party callback; several may be given, comma-separated
//   IDP_TTL_ID_TOKEN   ID token lifetime in seconds (default 3600)
//   IDP_ISSUER_PATH    a path the issuer ends with (default none), e.g.
//                      /<tenant-id>/v2.0 for an Entra ID-shaped issuer
//   IDP_ISSUER_SLASH   1: the issuer ends with `/` (as Auth0's does)
//   IDP_PROFILE        claims shaped like one provider's (default: plain OIDC,
//                      `groups` and `email_verified`):
//                        azure    tid, oid, groups; no email_verified but
//                                 xms_edov: true (eve: none); user olga has
//                                 the group overage (_claim_names/_claim_sources);
//                                 with IDP_ISSUER_PATH=/<tenant>/v2.0, also
//                                 <origin>/common/v2.0/.well-known/openid-configuration,
//                                 the multi-tenant document: the same endpoints,
//                                 issuer <origin>/{tenantid}/v2.0
//                        cognito  cognito:groups, cognito:username
//                        auth0    https://tether.test/groups
//                        google   hd (the Workspace domain), no groups
//                        gitlab   groups_direct (GitLab's ID token), no groups
//                        okta     groups (as the default)
//                        ping     groups (as the default; PingOne's issuer is
//                                 <origin>/<environment-id>/as)
//                        onelogin groups only when the `groups` scope is asked
//                                 (as OneLogin sends them), not with profile/email
//
// Test-only administration (loopback only, like everything here), for tests of
// tether's identity refresh:
//   POST /test-admin/users/<login>/groups   body: a JSON list of group names; the
//                                           user's groups from now on
//   POST /test-admin/users/<login>/revoke   destroys every grant the user gave, so
//                                           their refresh tokens answer invalid_grant
//   GET  /test-admin/refreshes              how many refresh_token grants succeeded
//
// Once listening it prints exactly one line to stdout:
//   IDP_READY http://127.0.0.1:<port>
// (the issuer, no trailing slash). Everything else goes to stderr. SIGTERM/SIGINT stop it.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

// Library notices use console.info; stdout is reserved for the ready line.
console.log = console.error;
console.info = console.error;

const USERS = {
  alice: {
    sub: 'alice-sub',
    password: 'alice-password',
    email: 'alice@example.com',
    name: 'Alice Example',
    groups: ['sre', 'dev'],
  },
  bob: {
    sub: 'bob-sub',
    password: 'bob-password',
    email: 'bob@example.com',
    name: 'Bob Example',
    groups: ['dev'],
  },
  carol: {
    sub: 'carol-sub',
    password: 'carol-password',
    email: 'carol@example.com',
    name: 'Carol Example',
    groups: [],
  },
  // Claims an address the IdP never verified (email_verified: false).
  eve: {
    sub: 'eve-sub',
    password: 'eve-password',
    email: 'eve@example.com',
    emailVerified: false,
    name: 'Eve Example',
    groups: [],
  },
  // Entra ID with more groups than fit a token (IDP_PROFILE=azure only).
  olga: {
    sub: 'olga-sub',
    password: 'olga-password',
    email: 'olga@example.com',
    name: 'Olga Example',
    groups: ['sre'],
    overage: true,
  },
  // An IdP that never sends email_verified at all.
  nora: {
    sub: 'nora-sub',
    password: 'nora-password',
    email: 'nora@example.com',
    emailVerified: null,
    name: 'Nora Example',
    groups: [],
  },
};

const bySub = new Map(Object.values(USERS).map((u) => [u.sub, u]));

// Grant ids by account (subject), for /test-admin/users/<login>/revoke.
const grantsBySub = new Map();
let refreshes = 0;

function envInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number.parseInt(raw, 10);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`idp: ${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

const port = envInt('IDP_PORT', 0);
const idTokenTtl = envInt('IDP_TTL_ID_TOKEN', 3600);
const clientId = process.env.IDP_CLIENT_ID || 'tether';
const issuerPath = (process.env.IDP_ISSUER_PATH || '').replace(/\/+$/, '');
if (issuerPath !== '' && !/^\/[A-Za-z0-9._~\/-]+$/.test(issuerPath)) {
  console.error(`idp: IDP_ISSUER_PATH must be a plain /path, got ${JSON.stringify(issuerPath)}`);
  process.exit(2);
}
const profile = process.env.IDP_PROFILE || '';
const PROFILE_CLAIMS = {
  '': [],
  okta: [],
  azure: ['tid', 'oid', 'xms_edov', '_claim_names', '_claim_sources'],
  cognito: ['cognito:groups', 'cognito:username'],
  auth0: ['https://tether.test/groups'],
  google: ['hd'],
  gitlab: ['groups_direct'],
  ping: [],
  onelogin: [],
};
// OneLogin releases groups through its own `groups` scope only.
const GROUPS_IN_PROFILE = profile !== 'onelogin';
if (!Object.hasOwn(PROFILE_CLAIMS, profile)) {
  console.error(`idp: unknown IDP_PROFILE ${JSON.stringify(profile)}`);
  process.exit(2);
}
const TENANT = issuerPath.split('/').filter((s) => s !== '')[0] || '9188040d-6c67-4c5b-b112-36a304b66dad';

// The claims of `user` shaped like the profile's provider.
function profileClaims(user, claims) {
  const out = { ...claims };
  switch (profile) {
    case 'azure':
      delete out.email_verified;
      out.tid = TENANT;
      out.oid = `00000000-0000-0000-0000-${user.sub.replace(/[^a-z]/g, '').padEnd(12, '0').slice(0, 12)}`;
      if (user.emailVerified === undefined) out.xms_edov = true;
      if (user.overage) {
        delete out.groups;
        out._claim_names = { groups: 'src1' };
        out._claim_sources = { src1: { endpoint: `https://graph.windows.net/${TENANT}/users/${out.oid}/getMemberObjects` } };
      }
      break;
    case 'cognito':
      out['cognito:groups'] = out.groups;
      out['cognito:username'] = user.email.split('@')[0];
      delete out.groups;
      break;
    case 'auth0':
      out['https://tether.test/groups'] = out.groups;
      delete out.groups;
      break;
    case 'gitlab':
      out.groups_direct = out.groups;
      delete out.groups;
      break;
    case 'google':
      out.hd = user.email.split('@')[1];
      delete out.groups;
      break;
    default:
      break;
  }
  return out;
}
const clientSecret = process.env.IDP_CLIENT_SECRET || 'tether-secret';
const redirectUris = (process.env.IDP_REDIRECT_URI || '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '');
if (redirectUris.length === 0) {
  console.error('idp: IDP_REDIRECT_URI is required');
  process.exit(2);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function loginPage(uid, clientName, error) {
  // (under IDP_ISSUER_PATH when set)
  const err = error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : '';
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Test IdP: sign in</title></head>
<body>
<h1>Test identity provider</h1>
<p>Sign in to continue to ${escapeHtml(clientName)}.</p>
${err}
<form method="post" action="${escapeHtml(issuerPath)}/interaction/${escapeHtml(uid)}/login">
  <label>Login <input name="login" type="text" autocomplete="username" autofocus required></label><br>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label><br>
  <button type="submit">Sign in</button>
</form>
</body>
</html>
`;
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 64 * 1024) {
        reject(new Error('form too large'));
        req.destroy();
      }
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(html);
}

// A fresh signing key per run; the relying party fetches it through JWKS.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'idp-test-rs256', alg: 'RS256', use: 'sig' };

const server = http.createServer();

server.listen(port, '127.0.0.1', () => {
  const origin = `http://127.0.0.1:${server.address().port}`;
  const issuer = `${origin}${issuerPath}${process.env.IDP_ISSUER_SLASH === '1' ? '/' : ''}`;
  const extraClaims = PROFILE_CLAIMS[profile];

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        client_name: 'tether',
        redirect_uris: redirectUris,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    // A client registered with either secret method may authenticate with the other.
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    jwks: { keys: [signingJwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    conformIdTokenClaims: false,
    scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', ...(GROUPS_IN_PROFILE ? ['groups'] : []), ...extraClaims],
      email: ['email', 'email_verified', ...(GROUPS_IN_PROFILE ? ['groups'] : []), ...extraClaims],
      groups: ['groups'],
    },
    async findAccount(_ctx, id) {
      const user = bySub.get(id);
      if (!user) return undefined;
      return {
        accountId: id,
        async claims() {
          const claims = {
            sub: user.sub,
            email: user.email,
            // Verified unless the user says otherwise; null = claim not sent.
            email_verified: user.emailVerified === undefined ? true : user.emailVerified,
            name: user.name,
            preferred_username: user.email.split('@')[0],
            groups: user.groups,
          };
          if (claims.email_verified === null) delete claims.email_verified;
          return profileClaims(user, claims);
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
    },
    interactions: {
      url(_ctx, interaction) {
        return `${issuerPath}/interaction/${interaction.uid}`;
      },
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      Grant: 14 * 24 * 3600,
      IdToken: idTokenTtl,
      Interaction: 3600,
      RefreshToken: 24 * 3600,
      Session: 14 * 24 * 3600,
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!doctype html><html><body><h1>IdP error</h1><pre>${escapeHtml(JSON.stringify(out, null, 2))}</pre></body></html>`;
    },
  });

  provider.on('server_error', (_ctx, err) => console.error('idp: server_error', err));
  provider.on('authorization.error', (_ctx, err) => console.error('idp: authorization.error', err.message, err.error_description || ''));
  provider.on('grant.error', (_ctx, err) => console.error('idp: grant.error', err.message, err.error_description || ''));
  provider.on('grant.success', (ctx) => {
    if (ctx.oidc.params.grant_type === 'refresh_token') {
      refreshes += 1;
      console.error(`idp: refresh_token grant for ${ctx.oidc.account ? ctx.oidc.account.accountId : '?'}`);
    }
  });

  function sendJson(res, status, value) {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(value));
  }

  // The test-only administration endpoints (see the header).
  async function admin(req, res, path) {
    if (req.method === 'GET' && path === '/test-admin/refreshes') {
      sendJson(res, 200, { refreshes });
      return;
    }
    const m = /^\/test-admin\/users\/([a-z]+)\/(groups|revoke)$/.exec(path);
    const user = m && Object.hasOwn(USERS, m[1]) ? USERS[m[1]] : undefined;
    if (req.method !== 'POST' || !user) {
      sendJson(res, 404, { error: 'not found' });
      return;
    }
    if (m[2] === 'groups') {
      const body = await new Promise((resolve, reject) => {
        let b = '';
        req.setEncoding('utf8');
        req.on('data', (c) => { b += c; });
        req.on('end', () => resolve(b));
        req.on('error', reject);
      });
      const groups = JSON.parse(body);
      if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string')) {
        sendJson(res, 400, { error: 'expected a JSON list of strings' });
        return;
      }
      user.groups = groups;
      console.error(`idp: test-admin: ${m[1]}'s groups are now ${JSON.stringify(groups)}`);
      sendJson(res, 200, { groups });
      return;
    }
    let revoked = 0;
    for (const grantId of grantsBySub.get(user.sub) || []) {
      const grant = await provider.Grant.find(grantId);
      if (grant) {
        await grant.destroy();
        revoked += 1;
      }
    }
    grantsBySub.delete(user.sub);
    console.error(`idp: test-admin: revoked ${revoked} grant(s) of ${m[1]}`);
    sendJson(res, 200, { revoked });
  }

  // Grants whatever the pending interaction still misses: the consent screen is skipped.
  async function autoGrant(details, accountId) {
    const { prompt: { details: missing }, params } = details;
    let grant;
    if (details.grantId) {
      grant = await provider.Grant.find(details.grantId);
    }
    if (!grant) {
      grant = new provider.Grant({ accountId, clientId: params.client_id });
    }
    grant.addOIDCScope(['openid', 'profile', 'email', ...String(params.scope || '').split(' ')]
      .filter((s) => s !== '').join(' '));
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    if (!grantsBySub.has(accountId)) grantsBySub.set(accountId, new Set());
    grantsBySub.get(accountId).add(grantId);
    return grantId;
  }

  const oidcCallback = provider.callback();

  async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) {
      sendHtml(res, 400, '<p>interaction mismatch</p>');
      return;
    }
    const promptName = details.prompt.name;

    if (req.method === 'GET' && action === '') {
      if (promptName === 'login') {
        sendHtml(res, 200, loginPage(uid, 'tether', null));
        return;
      }
      if (promptName === 'consent') {
        const grantId = await autoGrant(details, details.session.accountId);
        await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
        return;
      }
      sendHtml(res, 400, `<p>unsupported prompt ${escapeHtml(promptName)}</p>`);
      return;
    }

    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const login = form.get('login') || '';
      const user = Object.hasOwn(USERS, login) ? USERS[login] : undefined;
      if (!user || form.get('password') !== user.password) {
        console.error(`idp: failed login for ${JSON.stringify(login)}`);
        sendHtml(res, 200, loginPage(uid, 'tether', 'Invalid login or password.'));
        return;
      }
      console.error(`idp: ${login} signed in`);
      const grantId = await autoGrant(details, user.sub);
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: user.sub }, consent: { grantId } },
        { mergeWithLastSubmission: false },
      );
      return;
    }

    sendHtml(res, 405, '<p>method not allowed</p>');
  }

  server.on('request', (req, res) => {
    if (profile === 'azure' && issuerPath !== ''
      && (req.url || '').split('?')[0] === '/common/v2.0/.well-known/openid-configuration') {
      // Entra's multi-tenant discovery: this tenant's metadata, placeholder issuer.
      http.get(`${issuer}/.well-known/openid-configuration`, (r) => {
        let b = '';
        r.setEncoding('utf8');
        r.on('data', (c) => { b += c; });
        r.on('end', () => {
          const doc = JSON.parse(b);
          doc.issuer = `${origin}/{tenantid}/v2.0`;
          sendJson(res, 200, doc);
        });
      }).on('error', (err) => sendJson(res, 500, { error: err.message }));
      return;
    }
    if (issuerPath !== '') {
      // Mounted under the issuer's path, as a reverse proxy would mount it; the
      // library's own resume redirects (/auth/<uid>) come back without it.
      const raw = req.url || '/';
      if (raw === issuerPath || raw.startsWith(`${issuerPath}/`) || raw.startsWith(`${issuerPath}?`)) {
        req.originalUrl = raw;
        req.url = raw.slice(issuerPath.length) || '/';
      }
    }
    const url = new URL(req.url, origin);
    if (url.pathname.startsWith('/test-admin/')) {
      admin(req, res, url.pathname).catch((err) => {
        console.error('idp: test-admin failed:', err);
        if (!res.headersSent) sendJson(res, 500, { error: err.message });
      });
      return;
    }
    // oidc-provider honours offline_access only with prompt=consent (OIDC Core
    // §11); IdPs such as Okta, Keycloak or Entra issue the refresh token without
    // it, as tether expects: act like them (consent is automatic here anyway).
    // Entra and Google ask prompt=select_account, which oidc-provider does not
    // know; there is one account per browser here, so drop it.
    if (url.pathname === '/auth' && url.searchParams.has('prompt')) {
      const kept = url.searchParams.get('prompt').split(' ').filter((p) => p !== '' && p !== 'select_account');
      if (kept.length === 0) url.searchParams.delete('prompt');
      else url.searchParams.set('prompt', kept.join(' '));
      req.url = `${url.pathname}${url.search}`;
    }
    if (url.pathname === '/auth' && !url.searchParams.has('prompt')
      && (url.searchParams.get('scope') || '').split(' ').includes('offline_access')) {
      url.searchParams.set('prompt', 'consent');
      req.url = `${url.pathname}${url.search}`;
    }
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?\/?$/.exec(url.pathname);
    if (!m) {
      oidcCallback(req, res);
      return;
    }
    interaction(req, res, m[1], m[2] || '').catch((err) => {
      console.error('idp: interaction failed:', err);
      if (!res.headersSent) {
        sendHtml(res, 400, `<h1>IdP error</h1><p>${escapeHtml(err.message)}</p>`);
      } else {
        res.end();
      }
    });
  });

  process.stdout.write(`IDP_READY ${issuer}\n`);
});

server.on('error', (err) => {
  console.error('idp: listen failed:', err.message);
  process.exit(1);
});

function shutdown(signal) {
  console.error(`idp: ${signal}, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
