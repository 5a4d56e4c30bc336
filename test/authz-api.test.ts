/**
 * AuthorizationPolicy over a real control plane: put, get, delete, kept in the service's
 * definition (so the watch stream carries it to every proxy) and on disk across a restart;
 * bad input answered with the field named and nothing written; `skein apply` of a policy file.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { api, openWatch, skein, startControl, tempDir, type ControlProcess } from './helpers.js';

const FRONTEND = 'spiffe://shop.skein/ns/default/sa/frontend';
const ONLY_FRONTEND = { action: 'ALLOW', rules: [{ from: { identities: [FRONTEND] }, to: { methods: ['GET'], paths: ['/user', '/user/*'] } }] };

let cp: ControlProcess;
let dir: { path: string; remove: () => Promise<void> };

before(async () => {
  dir = await tempDir('skein-authz-api-');
  cp = await startControl({ dataDir: dir.path });
});

after(async () => {
  try {
    await cp?.stop();
  } finally {
    await dir?.remove();
  }
});

const call = (method: string, path: string, body?: unknown) => api(cp.http, method, path, body);
const revision = async () => (await call('GET', '/v1/health')).body.revision as number;

function assertError(r: { status: number; body: any; headers: Headers }, status: number, code: string, field: string, message?: RegExp): void {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.equal(r.headers.get('x-skein-error'), code);
  assert.equal(r.body.code, code, JSON.stringify(r.body));
  assert.equal(r.body.field, field, JSON.stringify(r.body));
  if (message !== undefined) assert.match(r.body.message, message);
}

describe('AuthorizationPolicy API', () => {
  test('put (201, then 200 unchanged, then changed), get, and the service definition carries it', async () => {
    assert.equal((await call('PUT', '/v1/services/user-service', { ports: [{ name: 'http', port: 80 }] })).status, 201);
    const empty = await call('GET', '/v1/services/user-service/policies');
    assert.equal(empty.status, 200);
    assert.deepEqual({ ...empty.body, revision: 0 }, { service: 'user-service', default: null, policies: [], revision: 0 });

    const watch = await openWatch(cp.http, '/v1/watch?service=user-service');
    try {
      await watch.waitForCount(1);
      const r1 = await call('PUT', '/v1/services/user-service/policies/only-frontend', ONLY_FRONTEND);
      assert.equal(r1.status, 201, JSON.stringify(r1.body));
      assert.deepEqual(r1.body.policy, { name: 'only-frontend', mode: 'enforce', ...ONLY_FRONTEND });
      assert.equal(r1.body.created, true);
      assert.equal(r1.body.changed, true);

      // The proxies learn it with the service, over the watch stream.
      const msgs = await watch.waitForCount(2);
      const svcMsg = msgs.find((m) => m.type === 'service');
      assert.ok(svcMsg !== undefined, JSON.stringify(msgs));
      assert.equal(svcMsg.revision, r1.body.revision);
      assert.deepEqual(svcMsg['definition'].authorization, { default: null, policies: [{ name: 'only-frontend', mode: 'enforce', ...ONLY_FRONTEND }] });
    } finally {
      watch.close();
    }

    const r2 = await call('PUT', '/v1/services/user-service/policies/only-frontend', { name: 'only-frontend', service: 'user-service', ...ONLY_FRONTEND });
    assert.equal(r2.status, 200);
    assert.equal(r2.body.changed, false, 'the same policy again changes nothing');
    assert.equal(await revision(), r2.body.revision);

    const r3 = await call('PUT', '/v1/services/user-service/policies/only-frontend', { ...ONLY_FRONTEND, mode: 'dry-run' });
    assert.equal(r3.status, 200);
    assert.equal(r3.body.changed, true);
    assert.ok(r3.body.revision > r2.body.revision);

    const g = await call('GET', '/v1/services/user-service/policies');
    assert.deepEqual(g.body.policies, [{ name: 'only-frontend', ...ONLY_FRONTEND, mode: 'dry-run' }]);
    assert.equal((await call('GET', '/v1/services/user-service')).body.definition.authorization.policies[0].mode, 'dry-run');
  });

  test('a default and policies set on the Service itself; adding a policy keeps both', async () => {
    const r = await call('PUT', '/v1/services/orders', { authorization: { default: 'deny', policies: [{ name: 'no-admin', action: 'DENY', rules: [{ to: { paths: ['/admin', '/admin/*'] } }] }] } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const g = await call('GET', '/v1/services/orders/policies');
    assert.equal(g.body.default, 'deny');
    assert.deepEqual(g.body.policies.map((p: { name: string }) => p.name), ['no-admin']);
    const added = await call('PUT', '/v1/services/orders/policies/watch-all', { action: 'AUDIT', rules: [{}] });
    assert.equal(added.status, 201);
    const g2 = await call('GET', '/v1/services/orders/policies');
    assert.equal(g2.body.default, 'deny', 'adding a policy keeps the default');
    assert.deepEqual(g2.body.policies.map((p: { name: string }) => p.name), ['no-admin', 'watch-all']);
  });

  test('bad input: refused with the field named, nothing written', async () => {
    const before = await revision();
    const P = '/v1/services/user-service/policies';
    assertError(await call('PUT', `${P}/p`, { action: 'ALLOW', rules: [{ from: { identities: [] } }] }), 400, 'SKEIN_E_VALIDATION', 'rules[0].from.identities', /is empty, which would match no request/);
    assertError(await call('PUT', `${P}/p`, { action: 'DENY', rules: [{ to: { paths: ['/x/../admin'] } }] }), 400, 'SKEIN_E_VALIDATION', 'rules[0].to.paths[0]', /which "\/x\/\.\.\/admin" never is: write "\/admin"/);
    assertError(await call('PUT', `${P}/p`, { action: 'DENY', rules: [] }), 400, 'SKEIN_E_VALIDATION', 'rules', /write `rules: \[\{\}\]` to match every request/);
    assertError(await call('PUT', `${P}/p`, { action: 'PERMIT', rules: [{}] }), 400, 'SKEIN_E_VALIDATION', 'action', /must be one of "ALLOW", "DENY", "AUDIT"/);
    assertError(await call('PUT', `${P}/p`, { action: 'ALLOW', rules: [{ from: { principals: ['x'] } }] }), 400, 'SKEIN_E_VALIDATION', 'rules[0].from.principals', /is not a known field/);
    assertError(await call('PUT', `${P}/p`, { name: 'q', action: 'ALLOW', rules: [{}] }), 409, 'SKEIN_E_CONFLICT', 'name');
    assertError(await call('PUT', `${P}/Bad_Name`, { action: 'ALLOW', rules: [{}] }), 400, 'SKEIN_E_VALIDATION', 'name', /policy name "Bad_Name" must be a DNS label/);
    assertError(await call('PUT', '/v1/services/nobody/policies/p', { action: 'ALLOW', rules: [{}] }), 404, 'SKEIN_E_UNKNOWN_SERVICE', 'service', /create the Service before its policies/);
    assertError(await call('DELETE', `${P}/nope`), 404, 'SKEIN_E_UNKNOWN_POLICY', 'name', /service "user-service" has no authorization policy "nope"/);
    assertError(
      await call('PUT', '/v1/services/user-service', { authorization: { policies: [{ name: 'a', action: 'DENY', rules: [{}] }, { name: 'a', action: 'DENY', rules: [{}] }] } }),
      400,
      'SKEIN_E_VALIDATION',
      'authorization.policies[1].name',
      /duplicates policy "a"/,
    );
    assert.equal(await revision(), before, 'nothing was written');
  });

  test('delete: gone from the service; kept on disk across a restart', async () => {
    assert.equal((await call('PUT', '/v1/services/user-service/policies/no-debug', { action: 'DENY', rules: [{ to: { paths: ['/debug/*'] } }] })).status, 201);
    const d = await call('DELETE', '/v1/services/user-service/policies/only-frontend');
    assert.equal(d.status, 200);
    assert.equal(d.body.deleted, 'only-frontend');
    assert.deepEqual((await call('GET', '/v1/services/user-service/policies')).body.policies.map((p: { name: string }) => p.name), ['no-debug']);

    await cp.stop();
    cp = await startControl({ dataDir: dir.path });
    const g = await call('GET', '/v1/services/user-service/policies');
    assert.deepEqual(g.body.policies, [{ name: 'no-debug', action: 'DENY', mode: 'enforce', rules: [{ to: { paths: ['/debug/*'] } }] }]);
    assert.equal((await call('GET', '/v1/services/orders/policies')).body.default, 'deny');
  });

  test('skein apply -f: a policy file applied after its Service; validate names a bad one', async () => {
    const f = join(dir.path, 'policy.yaml');
    await writeFile(
      f,
      `apiVersion: skein/v1\nkind: AuthorizationPolicy\nservice: catalog\nname: only-frontend\naction: ALLOW\nrules:\n  - from: { identities: ["${FRONTEND}"] }\n---\nkind: Service\nname: catalog\n`,
    );
    const r = await skein(['apply', '-f', f, '--control', cp.http]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'service/catalog created\nauthorizationpolicy/catalog/only-frontend created\n');
    assert.equal((await call('GET', '/v1/services/catalog/policies')).body.policies[0].name, 'only-frontend');

    const bad = join(dir.path, 'bad.yaml');
    await writeFile(bad, 'kind: AuthorizationPolicy\nservice: catalog\nname: p\naction: DENY\nrules:\n  - to: { paths: ["/a%2Fb"] }\n');
    const v = await skein(['validate', bad]);
    assert.equal(v.code, 1);
    assert.match(v.stderr, /bad\.yaml: resource \[0\] AuthorizationPolicy "p": invalid authorization policy: rules\[0\]\.to\.paths\[0\] requests are matched by their normalized path, which "\/a%2Fb" never is: write "\/a\/b"/);
  });
});
