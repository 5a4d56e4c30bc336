/** ServiceAuthz: the engine's inbound decision, with its opening for the service's own active health checks. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseService } from '../api/parse.js';
import { authorize, denied, ServiceAuthz, type AuthzRequest } from './authorization.js';

const ID = 'spiffe://shop/ns/default/sa/frontend';

function req(over: Partial<AuthzRequest> = {}): AuthzRequest {
  return { identity: ID, namespace: 'default', service: 'frontend', sourceAddress: '127.0.0.1', method: 'GET', path: '/health', port: 80, header: () => null, ...over };
}

function authz(raw: object): ServiceAuthz {
  const a = new ServiceAuthz('ledger');
  a.update(parseService({ name: 'ledger', ...raw }).authorization, '/health');
  return a;
}

test('a service with no policy and the allow default is not evaluated at all', () => {
  const a = new ServiceAuthz('ledger');
  a.update(null);
  assert.equal(a.active, false);
  assert.equal(new ServiceAuthz('ledger', 'deny').active, true, 'a deny mesh default is');
});

test("default deny: a mesh identity may GET the service's probe path, nothing else", () => {
  const a = authz({ authorization: { default: 'deny' } });
  assert.equal(a.decide(req()).allowed, true);
  assert.match(a.decide(req()).reason, /active health check path/);
  assert.equal(a.decide(req({ path: '/books' })).allowed, false);
  assert.equal(a.decide(req({ method: 'POST' })).allowed, false, 'GET only');
  assert.equal(a.decide(req({ identity: null, namespace: null, service: null })).allowed, false, 'a mesh identity only (not plaintext)');
});

test('a DENY rule that names the probe path still denies it; an ALLOW that does not match does not', () => {
  const deny = authz({ authorization: { policies: [{ name: 'no-probes', action: 'DENY', rules: [{ to: { paths: ['/health'] } }] }] } });
  assert.equal(deny.decide(req()).allowed, false);
  const allow = authz({ authorization: { policies: [{ name: 'only-web', action: 'ALLOW', rules: [{ from: { services: ['web'] } }] }] } });
  assert.equal(allow.decide(req()).allowed, true);
  assert.equal(allow.decide(req({ path: '/books' })).allowed, false);
});

test('denied(): 403 SKEIN_E_AUTHZ_DENIED naming the service, the policy and the rule', () => {
  const a = authz({ authorization: { policies: [{ name: 'no-admin', action: 'DENY', rules: [{ to: { paths: ['/x'] } }, { to: { paths: ['/admin/*'] } }] }] } });
  const r = denied('ledger', a.decide(req({ path: '/admin/users' })));
  assert.equal(r.code, 'SKEIN_E_AUTHZ_DENIED');
  assert.equal(r.message, 'RBAC: access to "ledger" denied: denied by DENY policy "no-admin" rule 1');
  assert.deepEqual(r.details, { service: 'ledger', policy: 'no-admin', rule: 1 });
});

test('authorize(): an inactive service is not evaluated (the request facts are not even built); a denial is reported once and answered 403', () => {
  const none = new ServiceAuthz('ledger');
  none.update(null);
  const seen: string[] = [];
  const observer = { authz: (s: string, d: { allowed: boolean }) => seen.push(`${s} ${d.allowed}`) };
  assert.equal(authorize(none, 'ledger', () => assert.fail('facts built for a service with nothing to decide'), observer, null), null);
  assert.deepEqual(seen, []);
  const a = authz({ authorization: { default: 'deny' } });
  const audited: boolean[] = [];
  const r = authorize(a, 'ledger', () => req({ path: '/books' }), observer, (d) => audited.push(d.allowed));
  assert.equal(r?.code, 'SKEIN_E_AUTHZ_DENIED');
  assert.deepEqual(seen, ['ledger false']);
  assert.deepEqual(audited, [false]);
  assert.equal(authorize(a, 'ledger', () => req(), observer, null), null, 'the probe path goes on');
});
