// A stand-in for GitHub's OAuth web flow and REST API, for tether's end-to-end tests
// of `idp_provider: github`. Development only. It answers what GitHub documents
// ("Authorizing OAuth apps", REST "Users", "Emails", "Orgs", "Teams"), in the
// GitHub Enterprise Server layout (web and OAuth at the root, REST under /api/v3),
// which is what tether derives from `idp_provider_url` for a host other than
// github.com:
//
//   GET  /login/oauth/authorize   client_id, redirect_uri, scope, state,
//                                 code_challenge(+_method=S256): a login form
//   POST /login/oauth/authorize   form login/password -> 302 redirect_uri?code&state
//   POST /login/oauth/access_token  client_id, client_secret, code, redirect_uri,
//                                 code_verifier; Accept: application/json ->
//                                 {access_token, token_type, scope} or, status 200,
//                                 {error: "bad_verification_code", ...}
//   GET  /api/v3/user, /api/v3/user/emails, /api/v3/user/orgs, /api/v3/user/teams
//                                 Authorization: Bearer|token <access_token>;
//                                 401 {"message":"Bad credentials"} otherwise.
//                                 Lists are paginated (per_page, page, Link header).
//
// Environment: GH_CLIENT_ID, GH_CLIENT_SECRET, GH_REDIRECT_URI (required).
// Prints one line to stdout when listening: `GITHUB_READY http://127.0.0.1:<port>`.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';

console.log = console.error;

const clientId = process.env.GH_CLIENT_ID || 'tether';
const clientSecret = process.env.GH_CLIENT_SECRET || 'tether-secret';
const redirectUri = process.env.GH_REDIRECT_URI || '';
if (redirectUri === '') {
  console.error('github: GH_REDIRECT_URI is required');
  process.exit(2);
}

const USERS = {
  alice: {
    password: 'alice-password',
    user: { login: 'alice', id: 1001, node_id: 'U_alice_node', name: 'Alice Example', type: 'User' },
    emails: [
      { email: 'alice@old.example', primary: false, verified: true, visibility: null },
      { email: 'alice@example.com', primary: true, verified: true, visibility: 'public' },
    ],
    orgs: ['acme'],
    teams: [['acme', 'sre'], ['acme', 'dev']],
  },
  bob: {
    password: 'bob-password',
    user: { login: 'bob', id: 1002, node_id: 'U_bob_node', name: 'Bob Example', type: 'User' },
    emails: [{ email: 'bob@example.com', primary: true, verified: true, visibility: 'public' }],
    orgs: ['acme', 'other'],
    teams: [['acme', 'dev']],
  },
  // A primary address GitHub has not verified.
  mallory: {
    password: 'mallory-password',
    user: { login: 'mallory', id: 1003, node_id: 'U_mallory_node', name: null, type: 'User' },
    emails: [{ email: 'alice@example.com', primary: true, verified: false, visibility: null }],
    orgs: [],
    teams: [],
  },
};

const codes = new Map(); // code -> {login, challenge, redirect_uri, expires}
const tokens = new Map(); // access token -> login

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers });
  res.end(body);
}
const json = (res, status, v, headers) => send(res, status, 'application/json; charset=utf-8', JSON.stringify(v), headers);

function readBody(req) {
  return new Promise((resolve, reject) => {
    let b = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { b += c; if (b.length > 65536) req.destroy(); });
    req.on('end', () => resolve(b));
    req.on('error', reject);
  });
}

function authorizePage(params, error) {
  const hidden = [...params].map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join('\n');
  const err = error ? `<p role="alert">${esc(error)}</p>` : '';
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in to GitHub (test)</title></head>
<body><h1>Sign in to GitHub · to continue to tether</h1>${err}
<form method="post" action="/login/oauth/authorize">${hidden}
<label>Username <input name="login" autocomplete="username" required></label>
<label>Password <input name="password" type="password" required></label>
<button type="submit">Authorize</button></form></body></html>`;
}

function bearer(req) {
  const h = req.headers.authorization || '';
  const m = /^(?:Bearer|token) (\S+)$/i.exec(h);
  return m ? tokens.get(m[1]) : undefined;
}

function page(res, base, path, url, all) {
  const perPage = Math.min(100, Number.parseInt(url.searchParams.get('per_page') || '30', 10) || 30);
  const pageNo = Math.max(1, Number.parseInt(url.searchParams.get('page') || '1', 10) || 1);
  const items = all.slice((pageNo - 1) * perPage, pageNo * perPage);
  const headers = {};
  if (pageNo * perPage < all.length) {
    headers.link = `<${base}${path}?per_page=${perPage}&page=${pageNo + 1}>; rel="next"`;
  }
  json(res, 200, items, headers);
}

const server = http.createServer(async (req, res) => {
  const base = `http://127.0.0.1:${server.address().port}`;
  const url = new URL(req.url, base);
  try {
    if (url.pathname === '/login/oauth/authorize' && req.method === 'GET') {
      const p = url.searchParams;
      if (p.get('client_id') !== clientId || p.get('redirect_uri') !== redirectUri) {
        send(res, 400, 'text/html', '<p>The redirect_uri MUST match the registered callback URL for this application.</p>');
        return;
      }
      send(res, 200, 'text/html; charset=utf-8', authorizePage(p, null));
      return;
    }
    if (url.pathname === '/login/oauth/authorize' && req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      const login = form.get('login') || '';
      const u = Object.hasOwn(USERS, login) ? USERS[login] : undefined;
      if (!u || form.get('password') !== u.password) {
        const keep = new URLSearchParams([...form].filter(([k]) => k !== 'login' && k !== 'password'));
        send(res, 200, 'text/html; charset=utf-8', authorizePage(keep, 'Incorrect username or password.'));
        return;
      }
      const code = randomBytes(10).toString('hex');
      codes.set(code, {
        login,
        challenge: form.get('code_challenge'),
        method: form.get('code_challenge_method'),
        redirect_uri: form.get('redirect_uri'),
        scope: form.get('scope') || '',
        expires: Date.now() + 10 * 60 * 1000,
      });
      console.error(`github: ${login} authorized (scope ${form.get('scope')})`);
      const to = new URL(form.get('redirect_uri'));
      to.searchParams.set('code', code);
      to.searchParams.set('state', form.get('state') || '');
      res.writeHead(302, { location: to.toString() });
      res.end();
      return;
    }
    if (url.pathname === '/login/oauth/access_token' && req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      const wantsJson = (req.headers.accept || '').includes('application/json');
      const reply = (v) => (wantsJson
        ? json(res, 200, v)
        : send(res, 200, 'application/x-www-form-urlencoded', new URLSearchParams(v).toString()));
      if (form.get('client_id') !== clientId || form.get('client_secret') !== clientSecret) {
        reply({ error: 'incorrect_client_credentials', error_description: 'The client_id and/or client_secret passed are incorrect.' });
        return;
      }
      const c = codes.get(form.get('code') || '');
      codes.delete(form.get('code') || '');
      const verifier = form.get('code_verifier') || '';
      const pkceOk = !c || !c.challenge
        || createHash('sha256').update(verifier).digest('base64url') === c.challenge;
      if (!c || c.expires < Date.now() || !pkceOk
        || (form.get('redirect_uri') && form.get('redirect_uri') !== c.redirect_uri)) {
        reply({ error: 'bad_verification_code', error_description: 'The code passed is incorrect or expired.' });
        return;
      }
      const token = `gho_${randomBytes(18).toString('hex')}`;
      tokens.set(token, c.login);
      reply({ access_token: token, token_type: 'bearer', scope: c.scope.split(' ').join(',') });
      return;
    }
    if (url.pathname.startsWith('/api/v3/') && req.method === 'GET') {
      const login = bearer(req);
      if (!login) {
        json(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });
        return;
      }
      const u = USERS[login];
      const path = url.pathname.slice('/api/v3'.length);
      if (path === '/user') {
        json(res, 200, { ...u.user, avatar_url: `${base}/avatars/${u.user.id}`, html_url: `${base}/${login}` });
      } else if (path === '/user/emails') {
        page(res, `${base}/api/v3`, path, url, u.emails);
      } else if (path === '/user/orgs') {
        page(res, `${base}/api/v3`, path, url, u.orgs.map((o, i) => ({ login: o, id: 500 + i })));
      } else if (path === '/user/teams') {
        page(res, `${base}/api/v3`, path, url, u.teams.map(([org, slug], i) => ({
          id: 900 + i, slug, name: slug.toUpperCase(), organization: { login: org, id: 500 },
        })));
      } else {
        json(res, 404, { message: 'Not Found' });
      }
      return;
    }
    json(res, 404, { message: 'Not Found' });
  } catch (err) {
    console.error('github: request failed:', err);
    if (!res.headersSent) json(res, 500, { message: err.message });
  }
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`GITHUB_READY http://127.0.0.1:${server.address().port}\n`);
});
function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
