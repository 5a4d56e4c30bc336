/**
 * Authorization policies at the callee's inbound proxy, end to end over mTLS: real `skein proxy`
 * processes for two callers (web, batch) and one callee proxy serving `users` and `vault`.
 * Identities come from the callers' certificates, so a header cannot claim one. The evaluation
 * order (DENY first, ALLOW, the default), dry-run and AUDIT policies, and the known path
 * bypasses against a DENY rule: every one denied (or refused as a bad path), none reaching the app.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import http from 'node:http';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { metricValue, registerInstance, startMeshProxy, type ProxyProcess } from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

let cp: ControlProcess;
let td: string;
/** Paths the apps got, by service. */
const hits: Record<string, string[]> = { users: [], vault: [] };
let web: ProxyProcess;
let batch: ProxyProcess;
let callee: ProxyProcess;

async function app(service: string): Promise<number> {
  const server = http.createServer((req, res) => {
    hits[service]!.push(req.url ?? '');
    req.resume();
    req.on('end', () => res.end(`${service} ok`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as { port: number }).port;
}

async function meshProxy(id: string, services: string[], workloads: string[]): Promise<ProxyProcess> {
  const p = await startMeshProxy(cp.http, id, services, workloads);
  cleanups.push(() => p.stop());
  return p;
}

/** One raw request through a caller's outbound listener: the request line exactly as given. */
function raw(p: ProxyProcess, workload: string, target: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  const port = p.workload(workload).outbound!.port;
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port });
    let got = '';
    s.on('connect', () => {
      const lines = Object.entries({ host: 'users', connection: 'close', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`);
      s.write(`GET ${target} HTTP/1.1\r\n${lines.join('')}\r\n`);
    });
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0), text: got }));
  });
}

const body = (text: string) => {
  const i = text.indexOf('\r\n\r\n');
  return i < 0 ? '' : text.slice(i + 4);
};
const errorOf = (text: string) => /x-skein-error: (\S+)/.exec(text)?.[1] ?? null;

async function putPolicy(service: string, name: string, policy: object): Promise<void> {
  const r = await api(cp.http, 'PUT', `/v1/services/${service}/policies/${name}`, policy);
  assert.ok(r.status === 200 || r.status === 201, JSON.stringify(r.body));
}

/** Until the callee proxy applies what was put (a request from web gets `want`). */
async function applied(target: string, want: number, from: ProxyProcess = web, workload = 'web-1', host = 'users'): Promise<void> {
  await waitFor(async () => (await raw(from, workload, target, { host })).status === want, { timeoutMs: 10_000, what: `${target} on ${host} to answer ${want}` });
}

before(async () => {
  const dir = await tempDir('skein-authz-');
  cleanups.push(dir.remove);
  cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
  cleanups.push(() => cp.stop());
  td = (await api(cp.http, 'GET', '/v1/ca')).body.trustDomain as string;
  const [usersPort, vaultPort] = [await app('users'), await app('vault')];
  callee = await meshProxy('callee', ['users', 'vault'], [`name=users-1,service=users,inbound=127.0.0.1:0,app=127.0.0.1:${usersPort}`, `name=vault-1,service=vault,inbound=127.0.0.1:0,app=127.0.0.1:${vaultPort}`]);
  web = await meshProxy('web', ['web'], ['name=web-1,service=web,outbound=127.0.0.1:0']);
  batch = await meshProxy('batch', ['batch'], ['name=batch-1,service=batch,outbound=127.0.0.1:0']);
  const label = { labels: { 'skein.io/inbound-proxy': 'true' } };
  for (const s of ['users', 'vault']) {
    assert.ok([200, 201].includes((await api(cp.http, 'PUT', `/v1/services/${s}`, s === 'vault' ? { authorization: { default: 'deny' } } : {})).status));
    await registerInstance(cp.http, s, `${s}-1`, callee.workload(`${s}-1`).inbound!.port, label);
  }
  await putPolicy('users', 'only-web', { action: 'ALLOW', rules: [{ from: { identities: [`spiffe://${td}/ns/default/sa/web`] } }] });
  await putPolicy('users', 'no-admin', { action: 'DENY', rules: [{ to: { paths: ['/admin', '/admin/*'] } }] });
  await putPolicy('users', 'dry', { action: 'DENY', mode: 'dry-run', rules: [{ to: { paths: ['/dry'] } }] });
  await putPolicy('users', 'watch', { action: 'AUDIT', rules: [{ to: { paths: ['/watched'] } }] });
  await applied('/admin', 403);
  await applied('/x', 403, batch, 'batch-1');
});

const decisions = async (labels: Record<string, string>) => metricValue((await api(callee.admin, 'GET', '/metrics')).body, 'skein_proxy_authz_decisions_total', labels) ?? 0;

describe('authorization at the inbound proxy', () => {
  test('ALLOW only web: web is served, batch gets 403 naming the policies considered, even claiming to be web', async () => {
    const before = hits.users!.length;
    const ok = await raw(web, 'web-1', '/profile');
    assert.equal(ok.status, 200, ok.text);
    assert.equal(body(ok.text), 'users ok');
    const no = await raw(batch, 'batch-1', '/profile', { 'x-skein-client-id': `spiffe://${td}/ns/default/sa/web`, 'x-skein-caller': 'web' });
    assert.equal(no.status, 403, no.text);
    assert.equal(errorOf(no.text), 'SKEIN_E_AUTHZ_DENIED');
    const b = JSON.parse(body(no.text));
    assert.equal(b.message, 'RBAC: access to "users" denied: no ALLOW policy matched (considered: "only-web")');
    assert.equal(b.details.service, 'users');
    assert.deepEqual(hits.users!.slice(before), ['/profile'], "the app got web's request only");
    assert.ok((await decisions({ service: 'users', outcome: 'deny', policy: 'only-web' })) >= 1);
  });

  test('DENY beats ALLOW: web asking for /admin gets 403 naming the DENY policy and its rule', async () => {
    const r = await raw(web, 'web-1', '/admin/users');
    assert.equal(r.status, 403, r.text);
    const b = JSON.parse(body(r.text));
    assert.equal(b.message, 'RBAC: access to "users" denied: denied by DENY policy "no-admin" rule 0');
    assert.deepEqual({ policy: b.details.policy, rule: b.details.rule }, { policy: 'no-admin', rule: 0 });
  });

  test('a dry-run DENY never blocks, and is counted; an AUDIT match is counted and allowed', async () => {
    const d0 = await decisions({ service: 'users', outcome: 'dry-run-deny', policy: 'dry' });
    const r = await raw(web, 'web-1', '/dry');
    assert.equal(r.status, 200, r.text);
    assert.equal((await decisions({ service: 'users', outcome: 'dry-run-deny', policy: 'dry' })) - d0, 1);
    const a0 = await decisions({ service: 'users', outcome: 'audit', policy: 'watch' });
    assert.equal((await raw(web, 'web-1', '/watched')).status, 200);
    assert.equal((await decisions({ service: 'users', outcome: 'audit', policy: 'watch' })) - a0, 1);
  });

  test("a service whose default is deny and that has no ALLOW policy: 403 saying so", async () => {
    const r = await raw(web, 'web-1', '/secret', { host: 'vault' });
    assert.equal(r.status, 403, r.text);
    assert.equal(JSON.parse(body(r.text)).message, 'RBAC: access to "vault" denied: no ALLOW policy applies to the service; its default is deny');
    assert.deepEqual(hits.vault, []);
  });

  // The known bypasses of a DENY on /admin (Istio's and Envoy's advisories): none reaches the app.
  const bypasses: Array<[string, string, Record<string, string>?]> = [
    ['double slash', '//admin/users'],
    ['encoded slash', '/%2fadmin/users'],
    ['encoded slash, upper case', '/%2Fadmin/users'],
    ['encoded backslash', '/%5cadmin/users'],
    ['backslash', '/\\admin/users'],
    ['dot segment', '/./admin/users'],
    ['dot-dot segment', '/x/../admin/users'],
    ['encoded dot-dot', '/%2e%2e/admin/users'],
    ['encoded dot', '/%2E/admin/users'],
    ['..; (Tomcat path parameter)', '/x/..;/admin/users'],
    ['a path parameter', '/admin;x=1'],
    ['a fragment', '/admin#frag'],
    ['upper case (apps route it alike)', '/ADMIN/users'],
    ['an encoded letter', '/%61dmin/users'],
    ['absolute-form target', 'http://users/admin/users'],
    ['Host in upper case', '/admin/users', { host: 'USERS' }],
    ['a spoofed identity header', '/admin/users', { 'x-skein-client-id': `spiffe://${td}/ns/default/sa/admin` }],
  ];
  for (const [what, target, headers] of bypasses) {
    test(`no bypass of the DENY on /admin: ${what} (${target})`, async () => {
      const before = hits.users!.length;
      const r = await raw(web, 'web-1', target, headers);
      assert.equal(r.status, 403, `${target}: ${r.text.slice(0, 300)}`);
      assert.equal(errorOf(r.text), 'SKEIN_E_AUTHZ_DENIED');
      assert.deepEqual(hits.users!.slice(before), [], 'nothing reached the app');
    });
  }

  test('an encoded NUL is refused as a bad path (400), before any policy', async () => {
    const before = hits.users!.length;
    const r = await raw(web, 'web-1', '/admin%00/users');
    assert.equal(r.status, 400, r.text);
    assert.equal(errorOf(r.text), 'SKEIN_E_BAD_PATH');
    assert.deepEqual(hits.users!.slice(before), []);
  });

  test('the path the policy matched is the path the app gets', async () => {
    const before = hits.users!.length;
    const r = await raw(web, 'web-1', '//profile/./x/..;/me;jsessionid=1?q=%2e');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(hits.users!.slice(before), ['/profile/me?q=%2e']);
  });
});
