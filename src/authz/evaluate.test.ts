import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import type { RawAuthorizationPolicy } from '../api/authz/schema.js';
import { effectiveDefault } from '../api/authz/model.js';
import { compilePolicies, evaluate, type AuthzDecision, type AuthzRequest } from './evaluate.js';
import { normalizePath } from './normalize.js';

const FRONTEND = 'spiffe://shop.skein/ns/default/sa/frontend';
const BATCH = 'spiffe://shop.skein/ns/jobs/sa/batch';

/** Policies as a service carries them, parsed and checked by src/api, then compiled. */
function compiled(policies: Array<Partial<RawAuthorizationPolicy> & Pick<RawAuthorizationPolicy, 'name' | 'action'>>, def?: 'allow' | 'deny') {
  const svc = parseService({ name: 'user-service', authorization: { ...(def === undefined ? {} : { default: def }), policies: policies.map((p) => ({ rules: [{}], ...p })) } });
  return { policies: compilePolicies(svc.authorization.policies), def: effectiveDefault(svc.authorization) };
}

function req(over: Partial<Omit<AuthzRequest, 'header'>> & { headers?: Record<string, string> } = {}): AuthzRequest {
  const headers = over.headers ?? {};
  return {
    identity: over.identity === undefined ? FRONTEND : over.identity,
    namespace: over.namespace === undefined ? 'default' : over.namespace,
    service: over.service === undefined ? (over.identity === undefined ? 'frontend' : (over.identity?.split('/sa/')[1] ?? null)) : over.service,
    sourceAddress: '127.0.0.1',
    method: over.method ?? 'GET',
    path: over.path ?? '/user',
    port: over.port ?? 80,
    header: (n) => headers[n] ?? null,
  };
}

type Want = Pick<AuthzDecision, 'allowed' | 'policy' | 'rule'> & { reason?: RegExp; dryRunDenied?: AuthzDecision['dryRunDenied']; audited?: AuthzDecision['audited'] };

function check(d: AuthzDecision, w: Want, label: string): void {
  assert.equal(d.allowed, w.allowed, `${label}: allowed (${d.reason})`);
  assert.equal(d.policy, w.policy, `${label}: policy`);
  assert.equal(d.rule, w.rule, `${label}: rule`);
  if (w.reason !== undefined) assert.match(d.reason, w.reason, label);
  assert.deepEqual(d.dryRunDenied, w.dryRunDenied ?? null, `${label}: dryRunDenied`);
  assert.deepEqual(d.audited, w.audited ?? [], `${label}: audited`);
}

const allowFrontend = { name: 'only-frontend', action: 'ALLOW' as const, rules: [{ from: { identities: [FRONTEND] } }] };
const denyAdmin = { name: 'no-admin', action: 'DENY' as const, rules: [{ to: { paths: ['/debug'] } }, { to: { paths: ['/admin', '/admin/*'] } }] };

describe('evaluation order', () => {
  const rows: Array<[string, ReturnType<typeof compiled>, AuthzRequest, Want]> = [
    ['no policy, mesh default (allow)', compiled([]), req(), { allowed: true, policy: null, rule: null, reason: /no ALLOW policy applies to the service; its default is allow/ }],
    ['no policy, service default deny', compiled([], 'deny'), req(), { allowed: false, policy: null, rule: null, reason: /its default is deny/ }],
    ['only a DENY policy, not matched: default allow', compiled([denyAdmin]), req(), { allowed: true, policy: null, rule: null }],
    ['only a DENY policy, not matched: default deny', compiled([denyAdmin], 'deny'), req(), { allowed: false, policy: null, rule: null }],
    ['DENY matched (rule 1)', compiled([denyAdmin]), req({ path: '/admin/x' }), { allowed: false, policy: 'no-admin', rule: 1, reason: /denied by DENY policy "no-admin" rule 1/ }],
    ['DENY beats a matching ALLOW', compiled([allowFrontend, denyAdmin]), req({ path: '/admin' }), { allowed: false, policy: 'no-admin', rule: 1 }],
    ['ALLOW matched', compiled([allowFrontend, denyAdmin]), req(), { allowed: true, policy: 'only-frontend', rule: 0, reason: /allowed by ALLOW policy "only-frontend" rule 0/ }],
    [
      'ALLOW present, not matched: denied, whatever the default',
      compiled([allowFrontend, { name: 'batch-reads', action: 'ALLOW', rules: [{ from: { namespaces: ['jobs'] }, to: { methods: ['GET'] } }] }], 'allow'),
      req({ identity: BATCH, namespace: 'jobs', method: 'POST' }),
      { allowed: false, policy: 'only-frontend, batch-reads', rule: null, reason: /^no ALLOW policy matched \(considered: "only-frontend", "batch-reads"\)$/ },
    ],
    ['ALLOW on identity: no identity (plaintext) is not matched', compiled([allowFrontend]), req({ identity: null, namespace: null }), { allowed: false, policy: 'only-frontend', rule: null }],
    ['dry-run DENY never blocks, but is reported', compiled([{ ...denyAdmin, mode: 'dry-run' }]), req({ path: '/debug' }), { allowed: true, policy: null, rule: null, dryRunDenied: { policy: 'no-admin', rule: 0 } }],
    [
      'dry-run DENY beside an enforced ALLOW: allowed by the ALLOW, the dry-run deny reported',
      compiled([allowFrontend, { ...denyAdmin, mode: 'dry-run' }]),
      req({ path: '/admin' }),
      { allowed: true, policy: 'only-frontend', rule: 0, dryRunDenied: { policy: 'no-admin', rule: 1 } },
    ],
    [
      'dry-run ALLOW not matched: allowed (default), reported as a dry-run deny',
      compiled([{ ...allowFrontend, mode: 'dry-run' }]),
      req({ identity: BATCH, namespace: 'jobs' }),
      { allowed: true, policy: null, rule: null, dryRunDenied: { policy: 'only-frontend', rule: null } },
    ],
    ['dry-run ALLOW matched: nothing to report', compiled([{ ...allowFrontend, mode: 'dry-run' }]), req(), { allowed: true, policy: null, rule: null }],
    [
      'AUDIT only reports (every matching AUDIT policy, its first matching rule)',
      compiled([
        { name: 'watch-posts', action: 'AUDIT', rules: [{ to: { methods: ['PUT'] } }, { to: { methods: ['POST'] } }] },
        { name: 'watch-all', action: 'AUDIT', rules: [{}] },
        { name: 'watch-admin', action: 'AUDIT', rules: [{ to: { paths: ['/admin'] } }] },
      ], 'deny'),
      req({ method: 'POST' }),
      { allowed: false, policy: null, rule: null, audited: [{ policy: 'watch-posts', rule: 1 }, { policy: 'watch-all', rule: 0 }] },
    ],
    [
      'AUDIT beside a DENY: both reported',
      compiled([denyAdmin, { name: 'watch-all', action: 'AUDIT', rules: [{}] }]),
      req({ path: '/admin' }),
      { allowed: false, policy: 'no-admin', rule: 1, audited: [{ policy: 'watch-all', rule: 0 }] },
    ],
  ];
  for (const [label, { policies, def }, r, want] of rows) test(label, () => check(evaluate(policies, def, r), want, label));
});

describe('rule matching', () => {
  test('from.services matches the service of the verified identity; no identity matches none', () => {
    const c = compiled([{ name: 'only-frontend', action: 'ALLOW', rules: [{ from: { services: ['frontend'] } }] }]);
    assert.equal(evaluate(c.policies, c.def, req()).allowed, true);
    assert.equal(evaluate(c.policies, c.def, req({ identity: 'spiffe://shop.skein/ns/default/sa/batch' })).allowed, false);
    assert.equal(evaluate(c.policies, c.def, req({ identity: null, service: null })).allowed, false);
  });
  const { policies, def } = compiled([
    {
      name: 'p',
      action: 'ALLOW',
      rules: [
        {
          from: { identities: ['spiffe://shop.skein/ns/default/*'], namespaces: ['def*'] },
          to: { methods: ['GET', 'HEAD'], paths: ['/user', '/api/*'], ports: [80, 8080] },
          when: [{ header: 'X-Tenant', values: ['acme', 'beta*'] }],
        },
      ],
    },
  ]);
  const ok = { headers: { 'x-tenant': 'acme' } };
  const cases: Array<[string, Parameters<typeof req>[0], boolean]> = [
    ['everything matches', ok, true],
    ['identity prefix', { ...ok, identity: 'spiffe://shop.skein/ns/default/sa/cart' }, true],
    ['identity outside the prefix', { ...ok, identity: 'spiffe://shop.skein/ns/other/sa/cart' }, false],
    ['namespace prefix miss', { ...ok, namespace: 'prod' }, false],
    ['method is case-sensitive', { ...ok, method: 'get' }, false],
    ['other method', { ...ok, method: 'POST' }, false],
    ['path prefix', { ...ok, path: '/api/v1/x' }, true],
    ['prefix "/api/*" does not match "/api"', { ...ok, path: '/api' }, false],
    ['exact path does not match a longer one', { ...ok, path: '/user/7' }, false],
    ['other port', { ...ok, port: 9090 }, false],
    ['header value prefix', { headers: { 'x-tenant': 'beta-2' } }, true],
    ['header value mismatch', { headers: { 'x-tenant': 'evil' } }, false],
    ['header missing', { headers: {} }, false],
  ];
  for (const [label, r, allowed] of cases) test(label, () => assert.equal(evaluate(policies, def, req(r)).allowed, allowed, label));

  test('"*" matches any present value, never a missing one', () => {
    const c = compiled([{ name: 'any', action: 'ALLOW', rules: [{ from: { identities: ['*'] }, when: [{ header: 'x-a', values: ['*'] }] }] }]);
    assert.equal(evaluate(c.policies, c.def, req({ headers: { 'x-a': '' } })).allowed, true);
    assert.equal(evaluate(c.policies, c.def, req({ headers: {} })).allowed, false);
    assert.equal(evaluate(c.policies, c.def, req({ identity: null, headers: { 'x-a': '1' } })).allowed, false);
  });
});

describe('bypass table: a DENY rule on /admin and /admin/*', () => {
  const { policies, def } = compiled([allowFrontend, { name: 'no-admin', action: 'DENY', rules: [{ to: { paths: ['/admin', '/admin/*'] } }] }]);
  /** What the inbound proxy does: normalize (400 on error), then evaluate the normalized path. */
  function decide(target: string): { status: 400 | 403 | 200; path: string | null; decision: AuthzDecision | null } {
    const n = normalizePath(target);
    if ('error' in n) return { status: 400, path: null, decision: null };
    const d = evaluate(policies, def, req({ path: n.path }));
    return { status: d.allowed ? 200 : 403, path: n.path, decision: d };
  }
  const BYPASSES = [
    '/admin',
    '/admin/users',
    '//admin',
    '/%2fadmin',
    '/%2Fadmin',
    '/%5cadmin',
    '\\admin',
    '/./admin',
    '/x/../admin',
    '/%2e%2e/admin',
    '/%2E/admin',
    '/x/..;/admin',
    '/..;/admin',
    '/admin;x=1',
    '/admin#frag',
    '/%61dmin',
    '/admin/%2e%2e/admin',
    'http://svc/admin',
    'HTTP://SVC:80//admin/../admin/x',
  ];
  for (const target of BYPASSES) {
    test(`${JSON.stringify(target)} is denied by no-admin`, () => {
      const r = decide(target);
      assert.equal(r.status, 403, `${target} -> ${JSON.stringify(r)}`);
      assert.equal(r.decision?.policy, 'no-admin');
      assert.equal(r.decision?.rule, 0);
      assert.match(r.path ?? '', /^\/admin(\/|$)/, 'the path forwarded (were it allowed) is the path matched');
    });
  }
  test('"/admin%00" is refused with 400 before any policy', () => assert.equal(decide('/admin%00').status, 400));
  for (const target of ['/ADMIN', '/Admin/users', '/%41DMIN', 'http://SVC/aDmIn']) {
    test(`${JSON.stringify(target)}: DENY compares paths without regard to case, so an app routing it like /admin is not reached`, () => {
      const r = decide(target);
      assert.equal(r.status, 403, JSON.stringify(r));
      assert.equal(r.decision?.policy, 'no-admin');
      assert.equal(r.path?.toLowerCase().startsWith('/admin'), true);
      assert.notEqual(r.path?.startsWith('/admin'), true, 'the case is kept in the path forwarded');
    });
  }
  test('a path that only starts like /admin is not denied', () => assert.equal(decide('/administrator').status, 200));
  test('ALLOW compares paths exactly: an ALLOW on /user does not let /USER through', () => {
    const c = compiled([{ name: 'user-reads', action: 'ALLOW', rules: [{ to: { paths: ['/user', '/user/*'] } }] }]);
    assert.equal(evaluate(c.policies, c.def, req({ path: '/user/7' })).allowed, true);
    const d = evaluate(c.policies, c.def, req({ path: '/USER/7' }));
    assert.equal(d.allowed, false);
    assert.equal(d.reason, 'no ALLOW policy matched (considered: "user-reads")');
  });
  test('AUDIT compares paths like DENY (without regard to case)', () => {
    const c = compiled([{ name: 'watch-admin', action: 'AUDIT', rules: [{ to: { paths: ['/admin/*'] } }] }]);
    assert.deepEqual(evaluate(c.policies, c.def, req({ path: '/ADMIN/x' })).audited, [{ policy: 'watch-admin', rule: 0 }]);
  });
});
