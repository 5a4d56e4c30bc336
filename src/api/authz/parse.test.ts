import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import { SkeinError } from '../../core/errors.js';
import { parseMeshFile } from '../mesh.js';
import { loadResourceFile, parseAuthorizationPolicy, parseResourceFile, parseService, serviceToRaw } from '../parse.js';
import { resourceFileJsonSchema } from '../schema.js';
import { resourceKey } from '../types.js';
import { AUTHZ_DEFAULTS, NO_AUTHORIZATION, effectiveDefault } from './model.js';

const FRONTEND = 'spiffe://shop.skein/ns/default/sa/frontend';

const EXAMPLE = `apiVersion: skein/v1
kind: AuthorizationPolicy
service: user-service
name: only-frontend
action: ALLOW
rules:
  - from: { identities: ["${FRONTEND}"], namespaces: [default] }
    to: { methods: [GET], paths: ["/user", "/admin/*"], ports: [80] }
    when: [ { header: x-tenant, values: [acme] } ]
`;

function fails(fn: () => unknown): SkeinError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SkeinError, String(e));
    return e;
  }
  assert.fail('expected a SkeinError');
}

/** The first problem of a policy body: [field, message]. */
function problem(body: Record<string, unknown>): [string, string] {
  const e = fails(() => parseAuthorizationPolicy({ name: 'p', action: 'ALLOW', rules: [{}], ...body }, { service: 'user-service', name: 'p' }));
  assert.equal(e.code, 'SKEIN_E_VALIDATION', e.message);
  assert.equal(e.status, 400);
  return [String(e.field), e.message];
}

test('an AuthorizationPolicy resource file: parsed, mode defaulted, keyed by service and name', () => {
  const [r] = parseResourceFile(EXAMPLE, 'policy.yaml');
  assert.ok(r !== undefined && r.kind === 'AuthorizationPolicy');
  assert.equal(resourceKey(r), 'AuthorizationPolicy/user-service/only-frontend');
  assert.equal(r.mode, 'enforce');
  assert.equal(r.action, 'ALLOW');
  assert.deepEqual(r.rules, [
    { from: { identities: [FRONTEND], namespaces: ['default'] }, to: { methods: ['GET'], paths: ['/user', '/admin/*'], ports: [80] }, when: [{ header: 'x-tenant', values: ['acme'] }] },
  ]);
  assert.ok(Object.isFrozen(r.rules[0]?.from?.identities));
  const raw = loadResourceFile(EXAMPLE, 'policy.yaml')[0]?.raw;
  assert.equal(raw?.['service'], 'user-service', 'the raw fields are what `skein apply` PUTs');
});

test('the JSON Schema of resource files knows AuthorizationPolicy', () => {
  const ajv = new Ajv({ strict: false });
  const validate = ajv.compile(resourceFileJsonSchema());
  assert.equal(validate({ kind: 'AuthorizationPolicy', service: 's', name: 'p', action: 'DENY', rules: [{}] }), true);
  assert.equal(validate({ kind: 'AuthorizationPolicy', service: 's', name: 'p', action: 'PERMIT', rules: [{}] }), false);
});

test('errors name the file, the resource and the field', () => {
  const e = fails(() => parseResourceFile(EXAMPLE.replace('paths: ["/user"', 'paths: ["/user/../admin"'), 'policy.yaml'));
  assert.equal(e.field, 'policy.yaml: resource [0] AuthorizationPolicy: rules[0].to.paths[0]');
  assert.match(e.message, /^policy\.yaml: resource \[0\] AuthorizationPolicy "only-frontend": invalid authorization policy: rules\[0\]\.to\.paths\[0\] requests are matched by their normalized path, which "\/user\/\.\.\/admin" never is: write "\/admin"/);
});

test('bad policies: each refused with the field named and the reason said', () => {
  const rows: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ action: 'PERMIT' }, 'action', /must be one of "ALLOW", "DENY", "AUDIT"/],
    [{ mode: 'log' }, 'mode', /must be one of "enforce", "dry-run"/],
    [{ rules: undefined }, 'rules', /is required/],
    [{ rules: [] }, 'rules', /is empty: a policy without rules matches no request \(write `rules: \[\{\}\]` to match every request\)/],
    [{ rules: [{ from: { identities: [] } }] }, 'rules[0].from.identities', /is empty, which would match no request: leave the field out to match any/],
    [{ rules: [{ to: { methods: [] } }] }, 'rules[0].to.methods', /is empty/],
    [{ rules: [{ to: { ports: [] } }] }, 'rules[0].to.ports', /is empty/],
    [{ rules: [{ when: [] }] }, 'rules[0].when', /is empty/],
    [{ rules: [{ when: [{ header: 'x-a', values: [] }] }] }, 'rules[0].when[0].values', /is empty/],
    [{ rules: [{ from: { identities: ['frontend'] } }] }, 'rules[0].from.identities[0]', /must be a SPIFFE ID/],
    [{ rules: [{ from: { identities: ['spiffe://*/sa/x'] } }] }, 'rules[0].from.identities[0]', /"\*" at offset 9: "\*" may only end a value/],
    [{ rules: [{ from: { identities: ['spiffe://a/ns/*/sa/x'] } }] }, 'rules[0].from.identities[0]', /may only end a value/],
    [{ rules: [{ from: { namespaces: ['Default'] } }] }, 'rules[0].from.namespaces[0]', /must be a namespace/],
    [{ rules: [{ to: { paths: ['admin'] } }] }, 'rules[0].to.paths[0]', /must start with "\/"/],
    [{ rules: [{ to: { paths: ['/a//b'] } }] }, 'rules[0].to.paths[0]', /requests are matched by their normalized path, which "\/a\/\/b" never is: write "\/a\/b"/],
    [{ rules: [{ to: { paths: ['/a%2Fb'] } }] }, 'rules[0].to.paths[0]', /write "\/a\/b"/],
    [{ rules: [{ to: { paths: ['/a%3bb'] } }] }, 'rules[0].to.paths[0]', /write "\/a%3Bb"/],
    [{ rules: [{ to: { paths: ['/a%zz'] } }] }, 'rules[0].to.paths[0]', /"%zz" at offset 2 of the path is not a percent-encoded byte/],
    [{ rules: [{ to: { paths: ['/a%00'] } }] }, 'rules[0].to.paths[0]', /an encoded NUL/],
    [{ rules: [{ to: { paths: ['/a;b'] } }] }, 'rules[0].to.paths[0]', /";" parameter/],
    [{ rules: [{ to: { paths: ['/a?b'] } }] }, 'rules[0].to.paths[0]', /a query/],
    [{ rules: [{ to: { paths: ['/a*b'] } }] }, 'rules[0].to.paths[0]', /may only end a value/],
    [{ rules: [{ to: { methods: ['G T'] } }] }, 'rules[0].to.methods[0]', /must be an HTTP method \(a token such as GET/],
    [{ rules: [{ to: { ports: [0] } }] }, 'rules[0].to.ports[0]', /must be >= 1/],
    [{ rules: [{ to: { hosts: ['a'] } }] }, 'rules[0].to.hosts', /is not a known field/],
    [{ rules: [{ to: { paths: ['/a', '/a'] } }] }, 'rules[0].to.paths', /must not list the same value twice/],
    [{ action: 'AUDIT', mode: 'dry-run' }, 'mode', /does not apply to AUDIT policies/],
  ];
  for (const [body, field, message] of rows) {
    const [f, m] = problem(body);
    assert.equal(f, field, `${JSON.stringify(body)}: ${m}`);
    assert.match(m, message, JSON.stringify(body));
    assert.match(m, /^invalid authorization policy: /);
  }
});

test('a body contradicting the path is a conflict; name and service come from the path', () => {
  const e = fails(() => parseAuthorizationPolicy({ name: 'other', action: 'DENY', rules: [{}] }, { service: 'web', name: 'p' }));
  assert.equal(e.code, 'SKEIN_E_CONFLICT');
  assert.equal(e.field, 'name');
  const p = parseAuthorizationPolicy({ action: 'DENY', rules: [{}] }, { service: 'web', name: 'p' });
  assert.equal(p.name, 'p');
  assert.equal(p.service, 'web');
});

test('a service carries its authorization, and gives it back as written (round trip)', () => {
  const authorization = { default: 'deny', policies: [{ name: 'only-frontend', action: 'ALLOW', mode: 'enforce', rules: [{ from: { identities: [FRONTEND] } }] }] };
  const svc = parseService({ name: 'user-service', authorization });
  assert.equal(svc.authorization.default, 'deny');
  assert.equal(effectiveDefault(svc.authorization), 'deny');
  assert.equal(svc.authorization.policies[0]?.name, 'only-frontend');
  assert.deepEqual(serviceToRaw(svc).authorization, authorization);
  assert.deepEqual(parseService(serviceToRaw(svc)), svc);
  // Through JSON, as the store and the watch stream carry it.
  assert.deepEqual(parseService(JSON.parse(JSON.stringify(serviceToRaw(svc)))), svc);
});

test('a service without authorization: the mesh default, nothing written back', () => {
  const svc = parseService({ name: 'web' });
  assert.deepEqual(svc.authorization, NO_AUTHORIZATION);
  assert.equal(effectiveDefault(svc.authorization), AUTHZ_DEFAULTS.meshDefault);
  assert.equal(AUTHZ_DEFAULTS.meshDefault, 'allow');
  assert.equal('authorization' in serviceToRaw(svc), false);
  assert.equal(effectiveDefault(undefined), 'allow', 'a definition from before authorization existed');
});

test('a service: duplicate policy names and bad policies are named by their path in the service', () => {
  const e = fails(() =>
    parseService({
      name: 'web',
      authorization: {
        default: 'maybe',
        policies: [
          { name: 'a', action: 'DENY', rules: [{}] },
          { name: 'a', action: 'ALLOW', rules: [] },
        ],
      },
    }),
  );
  assert.equal(e.field, 'authorization.default');
  const e2 = fails(() => parseService({ name: 'web', authorization: { policies: [{ name: 'a', action: 'DENY', rules: [{}] }, { name: 'a', action: 'ALLOW', rules: [] }] } }));
  assert.deepEqual(e2.details, [
    { field: 'authorization.policies[1].name', message: 'duplicates policy "a" (policies[0])' },
    { field: 'authorization.policies[1].rules', message: 'is empty: a policy without rules matches no request (write `rules: [{}]` to match every request)' },
  ]);
});

test('a mesh file service may carry authorization; a bad one is refused with the service named', () => {
  const mesh = (auth: string) => `kind: Mesh\nname: shop\nservices:\n  user-service:\n    command: node\n    authorization: ${auth}\n`;
  parseMeshFile(mesh('{ default: deny, policies: [{ name: only-frontend, action: ALLOW, rules: [{}] }] }'), 'shop.yaml');
  const e = fails(() => parseMeshFile(mesh('{ default: sometimes }'), 'shop.yaml'));
  assert.equal(e.field, 'services.user-service.authorization.default');
  assert.match(e.message, /^shop\.yaml: service "user-service": authorization\.default must be one of "allow", "deny"/);
});
