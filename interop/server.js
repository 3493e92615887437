// node oidc-provider as an independent identity provider for tests/interop.rs, plus a tiny
// protected API and a control endpoint for the harness. Everything listens on 127.0.0.1.
//
//   node interop/server.js CONFIG.json
//
// CONFIG.json is written by the harness at test time (secrets and keys are generated then):
//   { "accessTokenTtl": 3, "clientCredentialsTtl": 3, "refreshTokenTtl": 60,
//     "user": { "username": "...", "password": "..." },
//     "enforceBasic": ["client-id", ...],        // clients that must use HTTP Basic at /token
//     "dpopNonce": ["client-id", ...],           // clients whose DPoP proofs need a nonce
//     "apiDpopNonce": true,                      // the API wants its own nonce in proofs
//     "clients": [ oidc-provider client metadata, ... ] }
//
// Once listening it prints one JSON line on stdout: { "issuer", "token", "revocation",
// "introspection", "discovery", "api", "control" }. It exits when its stdin closes, so a
// test that dies leaves no node process behind.

import { createHash, randomBytes, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';
// oidc-provider's own JOSE library (panva/jose), for the API's DPoP proofs.
import { EmbeddedJWK, calculateJwkThumbprint, jwtVerify } from 'jose';
// The password grant has to check DPoP proofs itself; oidc-provider's own grants use these
// helpers. Deep imports of a version pinned exactly in package.json.
import validateDpop, { checkDpopReplay } from 'oidc-provider/lib/helpers/validate_dpop.js';
import { checkDpopRequired } from 'oidc-provider/lib/helpers/sender_constraints.js';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const ACCOUNT_ID = 'interop-user';
const SCOPES = ['openid', 'offline_access', 'profile', 'email', 'api:read', 'api:write'];

// ---------------------------------------------------------------------------------------------
// Counters the harness reads: what the token endpoint saw, from the server's side.

const stats = {
  token_requests: 0,
  // "<grant_type> <outcome>": outcome is "ok" or the RFC 6749 error code.
  token: {},
  // oidc-provider's own detail of each refusal (error_description is generic), newest last.
  token_errors: [],
  reuse_detected: 0,
  grants_revoked: 0,
  revocations: 0,
  // Requests to the revocation endpoint, whatever the answer.
  revocation_requests: 0,
  // How each token or revocation request authenticated its client, as sent (refused or not):
  // "client_secret_basic", "client_secret_post", "private_key_jwt" or "none".
  client_auth: {},
  introspections: 0,
  api_ok: 0,
  api_unauthorized: 0,
  // The API's DPoP requests: accepted, nonce challenges, refused proofs (and why, newest last).
  api_dpop_ok: 0,
  api_dpop_nonce_challenges: 0,
  api_dpop_invalid_proofs: 0,
  api_dpop_errors: [],
};

function countToken(grantType, outcome) {
  const key = `${grantType ?? '(none)'} ${outcome}`;
  stats.token[key] = (stats.token[key] ?? 0) + 1;
}

// ---------------------------------------------------------------------------------------------
// Storage: a Map, so the control endpoint can revoke or expire every token of a kind.
// Entries are never purged by age: oidc-provider checks `exp` itself on every find, and a
// test's server lives for seconds.

const store = new Map();

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload) {
    store.set(this.key(id), payload);
  }

  async find(id) {
    return store.get(this.key(id));
  }

  async findByUid(uid) {
    for (const [key, payload] of store) {
      if (key.startsWith(`${this.model}:`) && payload.uid === uid) return payload;
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [key, payload] of store) {
      if (key.startsWith(`${this.model}:`) && payload.userCode === userCode) return payload;
    }
    return undefined;
  }

  async consume(id) {
    const payload = store.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [key, payload] of store) {
      if (key.startsWith(`${this.model}:`) && payload.grantId === grantId) store.delete(key);
    }
  }
}

function forEachStored(model, action) {
  let count = 0;
  for (const [key, payload] of store) {
    if (key.startsWith(`${model}:`)) {
      action(key, payload);
      count += 1;
    }
  }
  return count;
}

// ---------------------------------------------------------------------------------------------
// The provider.

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

const idpServer = http.createServer();
const idpPort = await listen(idpServer);
const issuer = `http://127.0.0.1:${idpPort}`;

// A signing key for ID tokens, made now: no key is kept in the repository.
const signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  .privateKey.export({ format: 'jwk' });

const enforceBasic = new Set(config.enforceBasic ?? []);
const dpopNonce = new Set(config.dpopNonce ?? []);

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: config.clients,
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  jwks: { keys: [{ ...signingKey, kid: 'interop', use: 'sig', alg: 'ES256' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: SCOPES,
  async findAccount(ctx, sub) {
    if (sub !== ACCOUNT_ID) return undefined;
    return { accountId: sub, async claims() { return { sub }; } };
  },
  // Rotate on every use. The default rotates a confidential client's refresh token only
  // after 70 % of its lifetime, which would never show a client that reuses one.
  rotateRefreshToken: true,
  ttl: {
    AccessToken: config.accessTokenTtl,
    ClientCredentials: config.clientCredentialsTtl ?? config.accessTokenTtl,
    RefreshToken: config.refreshTokenTtl,
    IdToken: 3600,
    Grant: 3600,
    Session: 3600,
    Interaction: 3600,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      requireNonce: (ctx) => dpopNonce.has(ctx.oidc.client?.clientId),
    },
  },
});

// ---------------------------------------------------------------------------------------------
// The password grant (oidc-provider has none): check the fixed user, issue an access token and,
// with `offline_access` granted, a refresh token that the built-in refresh_token grant rotates.
//
// Scopes the client may not have are left out rather than refused (RFC 6749 §3.3 lets a server
// grant fewer than asked; Keycloak does the same), and the response says what was granted.

async function passwordGrant(ctx) {
  const { client, params } = ctx.oidc;
  const dPoP = await validateDpop(provider, ctx);

  if (params.username !== config.user.username || params.password !== config.user.password) {
    throw new errors.InvalidGrant('invalid user credentials');
  }
  checkDpopRequired(provider, ctx, dPoP);

  const allowed = new Set(client.scope ? client.scope.split(' ') : SCOPES);
  const requested = params.scope ? params.scope.split(' ') : [];
  const scope = requested.filter((s) => allowed.has(s) && SCOPES.includes(s)).join(' ');

  const grant = new provider.Grant({ accountId: ACCOUNT_ID, clientId: client.clientId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();

  const at = new provider.AccessToken({
    accountId: ACCOUNT_ID, client, grantId, gty: 'password', scope,
  });
  if (dPoP) {
    await checkDpopReplay(provider, ctx, dPoP, client.clientId);
    at.setThumbprint('jkt', dPoP.thumbprint);
  }
  const accessToken = await at.save();

  let refreshToken;
  if (client.grantTypeAllowed('refresh_token') && scope.split(' ').includes('offline_access')) {
    const rt = new provider.RefreshToken({
      accountId: ACCOUNT_ID,
      authTime: Math.floor(Date.now() / 1000),
      client,
      grantId,
      gty: 'password',
      rotations: 0,
      scope,
    });
    // A public client's refresh token is bound to its DPoP key, as oidc-provider does.
    if (client.clientAuthMethod === 'none' && at.jkt) rt.jkt = at.jkt;
    refreshToken = await rt.save();
  }

  ctx.body = {
    access_token: accessToken,
    expires_in: at.expiration,
    token_type: at.tokenType,
    ...(refreshToken ? { refresh_token: refreshToken } : {}),
    scope,
  };
}

provider.registerGrantType('password', passwordGrant, ['username', 'password', 'scope']);

// Every token-endpoint request is counted here, before oidc-provider sees it, so refusals of
// every kind (client authentication included) are counted too.
//
// Clients listed in `enforceBasic` must authenticate with HTTP Basic. oidc-provider itself
// treats client_secret_basic and client_secret_post as one family (its client_auth accepts
// either for both registrations), so the registration alone would not catch a client that
// ignores `token_endpoint_auth_method`. This is the harness's rule, answered the way
// oidc-provider answers a mismatched method.
provider.use(async (ctx, next) => {
  const revocation = ctx.path === '/token/revocation';
  if (ctx.method !== 'POST' || (ctx.path !== '/token' && !revocation)) return next();
  // Read the form once here; oidc-provider then takes the parsed `req.body` (its documented
  // fallback for an upstream body parser).
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString('utf8');
  ctx.req.body = raw;
  const form = new URLSearchParams(raw);
  const method = /^basic /i.test(ctx.headers.authorization ?? '') ? 'client_secret_basic'
    : form.has('client_assertion') ? 'private_key_jwt'
      : form.has('client_secret') ? 'client_secret_post' : 'none';
  stats.client_auth[method] = (stats.client_auth[method] ?? 0) + 1;
  if (revocation) {
    stats.revocation_requests += 1;
    await next();
    // oidc-provider names the token it found (and then destroys) as an entity; an unknown
    // token is answered 200 all the same, and not counted here.
    const found = ctx.oidc?.entities ?? {};
    if (ctx.status === 200 && (found.AccessToken || found.RefreshToken || found.ClientCredentials)) {
      stats.revocations += 1;
    }
    return undefined;
  }
  const grantType = form.get('grant_type');
  stats.token_requests += 1;

  const clientId = basicClientId(ctx.headers.authorization) ?? form.get('client_id');
  if (enforceBasic.has(clientId) && (form.has('client_secret') || !ctx.headers.authorization)) {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', `Basic realm="${issuer}"`);
    ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' };
    countToken(grantType, 'invalid_client');
    recordError({
      grant_type: grantType,
      status: 401,
      error: 'invalid_client',
      detail: 'the registered client_secret_basic was not used',
    });
    return undefined;
  }

  await next();
  countToken(grantType, ctx.status === 200 ? 'ok' : (ctx.body?.error ?? `http_${ctx.status}`));
  return undefined;
});

function basicClientId(authorization) {
  const match = /^basic (.+)$/i.exec(authorization ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, '%20'));
}

function recordError(error) {
  stats.token_errors.push(error);
  if (stats.token_errors.length > 50) stats.token_errors.shift();
}

provider.on('grant.error', (ctx, err) => {
  const detail = err.error_detail;
  if (detail === 'refresh token already used') stats.reuse_detected += 1;
  recordError({
    grant_type: ctx.oidc?.params?.grant_type,
    status: err.statusCode,
    error: err.message,
    error_description: err.error_description,
    detail,
  });
});
provider.on('grant.revoked', () => { stats.grants_revoked += 1; });
provider.on('introspection.success', () => { stats.introspections += 1; });

idpServer.on('request', provider.callback());

// ---------------------------------------------------------------------------------------------
// The protected API: 200 for a valid access token, 401 with RFC 6750's challenge otherwise.
// A DPoP-bound token must come as `Authorization: DPoP` with a proof of this request signed by
// its key (RFC 9449 §7), checked with jose; with `apiDpopNonce`, the proof must carry the
// API's own nonce (not the identity provider's): §9's `use_dpop_nonce` challenge.

function unauthorized(res, scheme = 'Bearer') {
  stats.api_unauthorized += 1;
  res.writeHead(401, {
    'content-type': 'application/json',
    'www-authenticate': `${scheme} error="invalid_token"`,
  });
  res.end(JSON.stringify({ error: 'invalid_token' }));
}

const apiNonce = { current: randomBytes(16).toString('base64url'), previous: undefined };
const apiJtis = new Set();

function dpopRefused(res, error, description) {
  stats.api_unauthorized += 1;
  const headers = {
    'content-type': 'application/json',
    'www-authenticate': `DPoP algs="ES256 EdDSA", error="${error}", error_description="${description}"`,
  };
  if (config.apiDpopNonce) headers['dpop-nonce'] = apiNonce.current;
  if (error === 'use_dpop_nonce') {
    stats.api_dpop_nonce_challenges += 1;
  } else {
    stats.api_dpop_invalid_proofs += 1;
    stats.api_dpop_errors.push(description);
    if (stats.api_dpop_errors.length > 50) stats.api_dpop_errors.shift();
  }
  res.writeHead(401, headers);
  res.end(JSON.stringify({ error, error_description: description }));
}

// The proof's problem, or undefined when it proves this request with the token's key.
async function dpopProblem(req, proof, accessToken, token) {
  let payload;
  let protectedHeader;
  try {
    ({ payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, {
      typ: 'dpop+jwt', algorithms: ['ES256', 'EdDSA', 'Ed25519'],
    }));
  } catch (error) {
    return ['invalid_dpop_proof', `DPoP proof: ${error.code ?? error.message}`];
  }
  if (typeof payload.jti !== 'string' || !payload.jti) return ['invalid_dpop_proof', 'DPoP proof must have a jti'];
  if (payload.htm !== req.method) return ['invalid_dpop_proof', 'DPoP proof htm mismatch'];
  const expected = new URL(req.url, `http://${req.headers.host}`);
  expected.search = '';
  const htu = URL.parse(payload.htu ?? '');
  if (!htu) return ['invalid_dpop_proof', 'DPoP proof htu mismatch'];
  htu.search = '';
  htu.hash = '';
  if (htu.href !== expected.href) return ['invalid_dpop_proof', 'DPoP proof htu mismatch'];
  if (typeof payload.iat !== 'number' || Math.abs(Date.now() / 1000 - payload.iat) > 60) {
    return ['invalid_dpop_proof', 'DPoP proof iat is not recent enough'];
  }
  if (payload.ath !== createHash('sha256').update(accessToken).digest('base64url')) {
    return ['invalid_dpop_proof', 'DPoP proof ath mismatch'];
  }
  if (await calculateJwkThumbprint(protectedHeader.jwk) !== token.jkt) {
    return ['invalid_dpop_proof', 'DPoP proof key is not the key the token is bound to'];
  }
  const nonceTaken = typeof payload.nonce === 'string'
    && (payload.nonce === apiNonce.current || payload.nonce === apiNonce.previous);
  if (config.apiDpopNonce && !nonceTaken) {
    return ['use_dpop_nonce', 'Resource server requires nonce in DPoP proof'];
  }
  if (apiJtis.has(payload.jti)) return ['invalid_dpop_proof', 'DPoP proof JWT Replay detected'];
  apiJtis.add(payload.jti);
  return undefined;
}

const api = http.createServer(async (req, res) => {
  const match = /^(Bearer|DPoP) ([^ ]+)$/.exec(req.headers.authorization ?? '');
  if (!match) return unauthorized(res);
  const [, scheme, value] = match;
  const token = await provider.AccessToken.find(value) ?? await provider.ClientCredentials.find(value);
  // `find` allows oidc-provider's clock tolerance (15 s); a resource server here is strict.
  if (!token || token.isExpired) return unauthorized(res, scheme);
  if (scheme === 'Bearer' && token.jkt) {
    // A DPoP-bound token sent as a bearer token is refused (RFC 9449 §7.2).
    return unauthorized(res);
  }
  const headers = { 'content-type': 'application/json' };
  if (scheme === 'DPoP') {
    if (!token.jkt) return unauthorized(res, 'DPoP');
    const proof = req.headers.dpop;
    if (typeof proof !== 'string') return dpopRefused(res, 'invalid_dpop_proof', 'DPoP proof missing');
    const problem = await dpopProblem(req, proof, value, token);
    if (problem) return dpopRefused(res, ...problem);
    stats.api_dpop_ok += 1;
    if (config.apiDpopNonce) headers['dpop-nonce'] = apiNonce.current;
  }
  stats.api_ok += 1;
  res.writeHead(200, headers);
  res.end(JSON.stringify({
    sub: token.accountId ?? null, client_id: token.clientId, scope: token.scope ?? '', jkt: token.jkt ?? null,
  }));
});
const apiPort = await listen(api);

// ---------------------------------------------------------------------------------------------
// Control, for the harness only (loopback): counters, revocations, expiries.

const actions = {
  'GET /stats': () => stats,
  'POST /revoke-access-tokens': () => ({
    revoked: forEachStored('AccessToken', (key) => store.delete(key))
      + forEachStored('ClientCredentials', (key) => store.delete(key)),
  }),
  'POST /revoke-refresh-tokens': () => ({
    revoked: forEachStored('RefreshToken', (key) => store.delete(key)),
  }),
  'POST /rotate-api-dpop-nonce': () => {
    apiNonce.previous = apiNonce.current;
    apiNonce.current = randomBytes(16).toString('base64url');
    return { rotated: 1 };
  },
  'POST /expire-refresh-tokens': () => ({
    expired: forEachStored('RefreshToken', (key, payload) => {
      payload.exp = Math.floor(Date.now() / 1000) - 1;
    }),
  }),
};

const control = http.createServer((req, res) => {
  const action = actions[`${req.method} ${req.url}`];
  res.writeHead(action ? 200 : 404, { 'content-type': 'application/json' });
  res.end(JSON.stringify(action ? action() : { error: 'no such action' }));
});
const controlPort = await listen(control);

process.stdin.on('close', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

process.stdout.write(`${JSON.stringify({
  issuer,
  token: `${issuer}/token`,
  revocation: `${issuer}/token/revocation`,
  introspection: `${issuer}/token/introspection`,
  discovery: `${issuer}/.well-known/openid-configuration`,
  api: `http://127.0.0.1:${apiPort}`,
  control: `http://127.0.0.1:${controlPort}`,
})}\n`);
