import { test } from 'node:test';
import assert from 'node:assert/strict';
import { accessAuditRecords, accessFor, presentedToken, refusal, type Access, type AccessEvent } from './access.js';

const tokenNeed = (a: Access) => {
  assert.equal(a.kind, 'token');
  return a as Access & { kind: 'token' };
};

test('reads are open on loopback, need any token from elsewhere', () => {
  assert.deepEqual(accessFor('GET', '/v1/services', {}, {}, true), { kind: 'open' });
  assert.deepEqual(accessFor('HEAD', '/v1/services/:service', { service: 'web' }, {}, true), { kind: 'open' });
  const far = tokenNeed(accessFor('GET', '/v1/services', {}, {}, false));
  assert.deepEqual(far.scopes, ['read', 'tap', 'proxy', 'automation']);
  assert.equal(refusal({ name: 'r', scope: 'read', services: null }, far), null);
});

test('the table: each write route and the scopes it takes; an unlisted write needs admin', () => {
  const rows: Array<[string, string, string[]]> = [
    ['PUT', '/v1/services/:service', ['automation']],
    ['DELETE', '/v1/services/:service/', ['automation']],
    ['PUT', '/v1/services/:service/routes/:route', ['automation']],
    ['PUT', '/v1/services/:s/policies/:policy', ['automation']],
    ['PUT', '/v1/services/:service/instances/:id', ['automation', 'proxy']],
    ['PUT', '/v1/services/:service/instances/:id/heartbeat', ['automation', 'proxy']],
    ['PUT', '/v1/mesh/services/:service/replicas', ['automation']],
    ['PUT', '/v1/proxies/:id', ['proxy']],
    ['POST', '/v1/tokens', []],
    ['DELETE', '/v1/tokens/:name', []],
    ['POST', '/v1/ca/tokens', []],
    ['POST', '/v1/some/new/route', []],
    ['PATCH', '/v1/services/:service', []],
  ];
  for (const [method, route, scopes] of rows) assert.deepEqual(tokenNeed(accessFor(method, route, { service: 'web' }, {}, true)).scopes, scopes, `${method} ${route}`);
  // No route matched (a 404 to be): a write still needs admin, so nothing is learnt without one.
  assert.deepEqual(tokenNeed(accessFor('PUT', undefined, {}, {}, true)).scopes, []);
  assert.deepEqual(accessFor('POST', '/v1/ca/certificates', {}, {}, false), { kind: 'route', by: 'a join token, checked by the CA' });
});

test('token listing and taps with headers or bodies need their own scope even on loopback', () => {
  assert.deepEqual(tokenNeed(accessFor('GET', '/v1/tokens', {}, {}, true)).scopes, []);
  assert.deepEqual(accessFor('GET', '/v1/tap', {}, { service: 'web' }, true), { kind: 'open' });
  assert.deepEqual(accessFor('GET', '/v1/tap', {}, { service: 'web', headers: '0', bodies: 'false' }, true), { kind: 'open' });
  assert.deepEqual(tokenNeed(accessFor('GET', '/v1/tap', {}, { service: 'web', headers: '' }, true)).scopes, ['tap']);
  assert.deepEqual(tokenNeed(accessFor('GET', '/v1/tap', {}, { service: 'web', bodies: 'yes' }, true)).scopes, ['tap']);
});

test('refusals name the token, its scope and what would do; proxy tokens only for their services', () => {
  const need = tokenNeed(accessFor('PUT', '/v1/services/:service/instances/:id', { service: 'db', id: 'db-1' }, {}, true));
  assert.equal(refusal({ name: 'admin', scope: 'admin', services: null }, need), null);
  assert.equal(refusal({ name: 'ci', scope: 'automation', services: null }, need), null);
  assert.equal(refusal({ name: 'p', scope: 'proxy', services: ['db'] }, need), null);
  assert.equal(refusal({ name: 'p', scope: 'proxy', services: ['web', 'api'] }, need), 'the proxy token "p" may change instances of "web", "api" only, not of "db"');
  assert.equal(
    refusal({ name: 'dash', scope: 'read', services: null }, need),
    'the token "dash" has scope "read"; PUT /v1/services/:service/instances/:id needs a token with scope "automation", "proxy" or "admin"',
  );
  const mint = tokenNeed(accessFor('POST', '/v1/tokens', {}, {}, true));
  assert.equal(refusal({ name: 'ci', scope: 'automation', services: null }, mint), 'the token "ci" has scope "automation"; POST /v1/tokens needs a token with scope "admin"');
});

test('the token presented: bearer header, or the cookie for reads only', () => {
  const t = 'skein_rd_' + 'a'.repeat(43);
  assert.equal(presentedToken({ method: 'PUT', headers: { authorization: `Bearer ${t}` } }), t);
  assert.equal(presentedToken({ method: 'PUT', headers: { authorization: `bearer  ${t} ` } }), t);
  assert.equal(presentedToken({ method: 'PUT', headers: { authorization: `Basic ${t}` } }), '');
  assert.equal(presentedToken({ method: 'GET', headers: { cookie: `a=b; skein_token=${t}` } }), t);
  assert.equal(presentedToken({ method: 'PUT', headers: { cookie: `skein_token=${t}` } }), null);
  assert.equal(presentedToken({ method: 'GET', headers: {} }), null);
});

const event = (e: Partial<AccessEvent> & Pick<AccessEvent, 'outcome'>): AccessEvent => ({ method: 'PUT', path: '/v1/x', route: undefined, params: {}, body: undefined, from: '127.0.0.1', status: 200, requestId: 'req-1', ...e });
const admin = { name: 'admin', scope: 'admin' as const, services: null };

test('audit lines of the access hook: a refusal names the token refused, a write its maker, a policy change and a token minted besides', () => {
  const [refused, ...rest] = accessAuditRecords(event({ outcome: { kind: 'refused', code: 'SKEIN_E_FORBIDDEN', reason: 'no', token: { name: 'dash', scope: 'read', services: null } }, status: 403 }), 0, 9);
  assert.deepEqual(rest, []);
  assert.deepEqual(
    { event: refused?.event, actor: refused?.actor, scope: refused?.scope, code: refused?.code, reason: refused?.reason, revision: refused?.revision, requestId: refused?.requestId, details: refused?.details },
    { event: 'api-token-refused', actor: 'dash', scope: 'read', code: 'SKEIN_E_FORBIDDEN', reason: 'no', revision: 9, requestId: 'req-1', details: { status: 403 } },
  );
  const put = accessAuditRecords(event({ outcome: { kind: 'write', token: admin }, route: '/v1/services/:service/policies/:policy', params: { service: 'users', policy: 'p' }, path: '/v1/services/users/policies/p', status: 201 }), 0, 10);
  assert.deepEqual(put.map((r) => [r.event, r.actor, r.service, r.policy]), [['control-write', 'admin', 'users', null], ['policy-changed', 'admin', 'users', 'p']]);
  const failed = accessAuditRecords(event({ outcome: { kind: 'write', token: admin }, method: 'DELETE', route: '/v1/services/:service/policies/:policy', params: { service: 'users', policy: 'p' }, status: 404 }), 0, 10);
  assert.deepEqual(failed.map((r) => [r.event, r.details]), [['control-write', { status: 404 }]], 'a write that failed changed nothing');
  const minted = accessAuditRecords(event({ outcome: { kind: 'write', token: admin }, method: 'POST', route: '/v1/tokens', body: { name: 'ci', scope: 'automation' }, status: 201 }), 0, 10);
  assert.deepEqual(minted.map((r) => r.event), ['control-write', 'api-token-minted']);
  assert.deepEqual(minted[1]?.details, { token: 'ci', tokenScope: 'automation' });
  const revoked = accessAuditRecords(event({ outcome: { kind: 'write', token: admin }, method: 'DELETE', route: '/v1/tokens/:name', params: { name: 'ci' }, status: 200 }), 0, 10);
  assert.deepEqual(revoked.map((r) => [r.event, r.reason]), [['control-write', null], ['api-token-revoked', 'token "ci" revoked by "admin"']]);
});
