/**
 * The audit log, end to end: a real control plane and two real `skein proxy` processes with mTLS
 * strict, each writing its audit log to a file (`--audit-log FILE`). An enforced deny, a dry-run
 * deny and an AUDIT match each write exactly one line with the caller's identity, the raw and the
 * normalized path, the policy, the rule and the request id; an allowed request writes none. On the
 * control plane: a token refusal and a policy PUT name the token; the CA's events are there. An
 * inbound plaintext connection refused by a strict port is a line too. `skein audit` filters.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { createConnection } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { SKEIN_BIN, api, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';
import type { AuditRecord } from '../src/api/audit.js';
import { MESH_ALPN } from '../src/api/mtls.js';
import { createCsr, generateKeyPair } from '../src/identity/certs.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

let cp: ControlProcess;
let td: string;
let web: ProxyProcess;
let callee: ProxyProcess;
let controlAudit: string;
let proxyAudit: string;
let inboundPort: number;
/** Paths the app got. */
const hits: string[] = [];

async function lines(file: string): Promise<AuditRecord[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as AuditRecord);
}

/** The lines of `file` once `until` holds for them (the writer is asynchronous). */
async function linesWhen(file: string, until: (rs: AuditRecord[]) => boolean, what: string): Promise<AuditRecord[]> {
  return waitFor(
    async () => {
      const rs = await lines(file);
      return until(rs) ? rs : undefined;
    },
    { timeoutMs: 10_000, what },
  ) as Promise<AuditRecord[]>;
}

/** One request through web's outbound listener, the target exactly as given. */
function raw(target: string, requestId: string): Promise<number> {
  const port = web.workload('web-1').outbound!.port;
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port });
    let got = '';
    s.on('connect', () => s.write(`GET ${target} HTTP/1.1\r\nhost: users\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n`));
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0)));
  });
}

/** A certificate of `service` from the mesh CA, as a proxy gets it (a join token, a CSR). */
async function certificateOf(service: string): Promise<{ key: string; cert: string; ca: string[] }> {
  const t = await api(cp.http, 'POST', '/v1/ca/tokens', { proxy: `raw-${service}`, services: [service] });
  assert.equal(t.status, 201, JSON.stringify(t.body));
  const kp = await generateKeyPair();
  const r = await api(cp.http, 'POST', '/v1/ca/certificates', { service, csr: await createCsr(kp.privateKeyPem) }, { authorization: `Bearer ${t.body.token}` });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return { key: kp.privateKeyPem, cert: [r.body.certificate, ...r.body.chain].join(''), ca: r.body.roots };
}

/**
 * One request straight to the callee's inbound listener over mTLS as `web` (as a peer proxy
 * would, but with the target exactly as given: a Skein proxy would have normalized it).
 */
async function direct(target: string, requestId: string): Promise<number> {
  const c = await certificateOf('web');
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: inboundPort, key: c.key, cert: c.cert, ca: c.ca, ALPNProtocols: [MESH_ALPN], rejectUnauthorized: false }, () => {
      s.write(`GET ${target} HTTP/1.1\r\nhost: users\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n`);
    });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0)));
  });
}

async function meshProxy(id: string, services: string[], workloads: string[]): Promise<ProxyProcess> {
  const t = await api(cp.http, 'POST', '/v1/ca/tokens', { proxy: id, services });
  assert.equal(t.status, 201, JSON.stringify(t.body));
  const p = await startProxy({ control: cp.http, workloads, args: ['--mtls', 'strict', '--join-token', t.body.token, '--id', id, '--audit-log', proxyAudit] });
  cleanups.push(() => p.stop());
  await waitForProxyReady(p);
  return p;
}

const idOf = (service: string) => `spiffe://${td}/ns/default/sa/${service}`;
const byRequest = (rs: AuditRecord[], id: string) => rs.filter((r) => r.requestId === id);

before(async () => {
  const dir = await tempDir('skein-audit-');
  cleanups.push(dir.remove);
  controlAudit = join(dir.path, 'control.audit');
  proxyAudit = join(dir.path, 'proxy.audit');
  cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off', '--audit-log', controlAudit] });
  cleanups.push(() => cp.stop());
  td = (await api(cp.http, 'GET', '/v1/ca')).body.trustDomain as string;
  const app = http.createServer((req, res) => {
    hits.push(req.url ?? '');
    req.resume();
    req.on('end', () => res.end('users ok'));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => app.close(() => r())));
  const appPort = (app.address() as { port: number }).port;
  // Both proxies append to one file: one line per record, whoever writes it.
  callee = await meshProxy('callee', ['users'], [`name=users-1,service=users,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`]);
  web = await meshProxy('web', ['web'], ['name=web-1,service=web,outbound=127.0.0.1:0']);
  inboundPort = callee.workload('users-1').inbound!.port;
  assert.ok([200, 201].includes((await api(cp.http, 'PUT', '/v1/services/users', {})).status));
  await registerInstance(cp.http, 'users', 'users-1', inboundPort, { labels: { 'skein.io/inbound-proxy': 'true' } });
  for (const [name, policy] of Object.entries({
    'no-admin': { action: 'DENY', rules: [{ to: { paths: ['/admin', '/admin/*'] } }] },
    dry: { action: 'DENY', mode: 'dry-run', rules: [{ to: { paths: ['/other'] } }, { to: { paths: ['/dry'] } }] },
    watch: { action: 'AUDIT', rules: [{ to: { paths: ['/watched'] } }] },
  })) {
    const r = await api(cp.http, 'PUT', `/v1/services/users/policies/${name}`, policy);
    assert.ok(r.status === 200 || r.status === 201, JSON.stringify(r.body));
  }
  let n = 0;
  await waitFor(async () => (await raw('/admin', `warm-up-${n++}`)) === 403, { timeoutMs: 10_000, what: 'the callee proxy to apply the DENY policy' });
});

describe('the proxy audit log', () => {
  test('a denied request: one line naming the caller, the raw and the normalized path, the policy, the rule and the request id', async () => {
    const before = hits.length;
    assert.equal(await direct('//admin/./x/..;/users?token=secret', 'deny-1'), 403);
    assert.deepEqual(hits.slice(before), []);
    const rs = byRequest(await linesWhen(proxyAudit, (rs) => byRequest(rs, 'deny-1').length > 0, 'the deny line'), 'deny-1');
    assert.equal(rs.length, 1, JSON.stringify(rs));
    const r = rs[0]!;
    assert.equal(typeof r.revision, 'number');
    assert.ok((r.revision as number) > 0);
    assert.ok(Math.abs(Date.parse(r.time) - Date.now()) < 60_000, r.time);
    assert.deepEqual(
      { ...r, time: null, revision: null },
      {
        time: null,
        kind: 'authz',
        event: null,
        decision: 'deny',
        mode: 'enforce',
        policy: 'no-admin',
        rule: 0,
        reason: 'denied by DENY policy "no-admin" rule 0',
        code: 'SKEIN_E_AUTHZ_DENIED',
        sourceIdentity: idOf('web'),
        sourceAddress: '127.0.0.1',
        tls: 'mtls',
        tlsError: null,
        destinationIdentity: idOf('users'),
        service: 'users',
        port: inboundPort,
        method: 'GET',
        rawPath: '//admin/./x/..;/users',
        path: '/admin/users',
        requestId: 'deny-1',
        revision: null,
        actor: null,
        scope: null,
        details: null,
      },
    );
  });

  test('a dry-run deny: the request is served, and one line says which policy and rule would have denied it', async () => {
    assert.equal(await raw('/dry', 'dry-1'), 200);
    const rs = byRequest(await linesWhen(proxyAudit, (rs) => byRequest(rs, 'dry-1').length > 0, 'the dry-run line'), 'dry-1');
    assert.equal(rs.length, 1, JSON.stringify(rs));
    const r = rs[0]!;
    assert.deepEqual(
      { decision: r.decision, mode: r.mode, policy: r.policy, rule: r.rule, reason: r.reason, sourceIdentity: r.sourceIdentity, rawPath: r.rawPath, path: r.path },
      { decision: 'dry-run-deny', mode: 'dry-run', policy: 'dry', rule: 1, reason: 'dry-run DENY policy "dry" rule 1 would deny', sourceIdentity: idOf('web'), rawPath: '/dry', path: '/dry' },
    );
  });

  test('an AUDIT match: served, one line naming the AUDIT policy', async () => {
    assert.equal(await raw('/watched', 'audit-1'), 200);
    const rs = byRequest(await linesWhen(proxyAudit, (rs) => byRequest(rs, 'audit-1').length > 0, 'the audit line'), 'audit-1');
    assert.equal(rs.length, 1, JSON.stringify(rs));
    assert.deepEqual(
      { decision: rs[0]!.decision, mode: rs[0]!.mode, policy: rs[0]!.policy, rule: rs[0]!.rule, rawPath: rs[0]!.rawPath, path: rs[0]!.path, service: rs[0]!.service, sourceIdentity: rs[0]!.sourceIdentity },
      { decision: 'audit', mode: 'audit', policy: 'watch', rule: 0, rawPath: '/watched', path: '/watched', service: 'users', sourceIdentity: idOf('web') },
    );
  });

  test('an allowed request writes nothing (a deny after it is written, so it would have been written before)', async () => {
    assert.equal(await raw('/profile', 'allow-1'), 200);
    assert.equal(await raw('/admin', 'deny-after-allow'), 403);
    const rs = await linesWhen(proxyAudit, (rs) => byRequest(rs, 'deny-after-allow').length === 1, 'the deny after the allowed request');
    assert.deepEqual(byRequest(rs, 'allow-1'), []);
  });

  test('plaintext to a strict inbound port: refused, and a line with the TLS error', async () => {
    await new Promise<void>((resolve, reject) => {
      const s = createConnection({ host: '127.0.0.1', port: inboundPort }, () => s.write('GET / HTTP/1.1\r\nhost: users\r\n\r\n'));
      s.on('data', () => undefined);
      s.on('error', reject);
      s.on('close', () => resolve());
    });
    const rs = await linesWhen(proxyAudit, (rs) => rs.some((r) => r.event === 'mtls-refused'), 'the mTLS refusal line');
    const r = rs.filter((x) => x.event === 'mtls-refused');
    assert.equal(r.length, 1, JSON.stringify(r));
    assert.deepEqual(
      { kind: r[0]!.kind, tls: r[0]!.tls, tlsError: r[0]!.tlsError, service: r[0]!.service, sourceAddress: r[0]!.sourceAddress, destinationIdentity: r[0]!.destinationIdentity, direction: r[0]!.details?.['direction'] },
      { kind: 'security', tls: 'plaintext', tlsError: 'plaintext', service: 'users', sourceAddress: '127.0.0.1', destinationIdentity: idOf('users'), direction: 'inbound' },
    );
    assert.match(r[0]!.reason ?? '', /^a plaintext connection reached a port that takes mTLS only: /);
  });

  test('skein audit --decision deny prints the denies only; -o table shows them for people', async () => {
    const json = await skein(['audit', proxyAudit, '--decision', 'deny', '-o', 'json']);
    assert.equal(json.code, 0, json.stderr);
    const rs = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    assert.ok(rs.length >= 3, json.stdout);
    assert.ok(rs.every((r) => r.decision === 'deny'));
    assert.deepEqual(rs.filter((r) => ['deny-1', 'dry-1', 'audit-1', 'allow-1'].includes(r.requestId ?? '')).map((r) => r.requestId), ['deny-1']);
    const tbl = await skein(['audit', proxyAudit, '--decision', 'dry-run-deny']);
    assert.equal(tbl.code, 0, tbl.stderr);
    const [head, ...rows] = tbl.stdout.trimEnd().split('\n');
    assert.match(head!, /^TIME +WHAT +SERVICE +SOURCE +ACTOR +REQUEST +POLICY +REASON$/);
    assert.equal(rows.length, 1, tbl.stdout);
    assert.match(rows[0]!, new RegExp(`dry-run-deny +users +${idOf('web').replace(/[.]/g, '\\.')} +GET /dry +dry rule 1 +dry-run DENY policy "dry" rule 1 would deny$`));
    const none = await skein(['audit', proxyAudit, '--decision', 'deny', '--since', '1ms', '-o', 'json']);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, '');
    const bad = await skein(['audit', proxyAudit, '--since', 'soon']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--since must be a duration such as 15s, got "soon"/);
  });

  test('skein audit --follow prints a deny as it is written', async () => {
    const child = spawn(process.execPath, [SKEIN_BIN, 'audit', proxyAudit, '--follow', '--decision', 'deny', '-o', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((r) => child.once('exit', r));
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill();
      await exited;
    });
    const seen: string[] = [];
    createInterface({ input: child.stdout }).on('line', (l) => seen.push((JSON.parse(l) as AuditRecord).requestId ?? ''));
    await waitFor(() => seen.includes('deny-1'), { timeoutMs: 10_000, what: 'skein audit --follow to print what is there' });
    assert.equal(await raw('/admin/later', 'deny-followed'), 403);
    await waitFor(() => seen.includes('deny-followed'), { timeoutMs: 10_000, what: 'skein audit --follow to print the new deny' });
    child.kill();
    await exited;
  });
});

describe('the control plane audit log', () => {
  test('the CA: join tokens minted and used, certificates issued, naming the identity', async () => {
    const rs = await linesWhen(controlAudit, (rs) => rs.some((r) => r.event === 'certificate-issued' && r.destinationIdentity === idOf('web')), 'web certificate issued');
    const issued = rs.find((r) => r.event === 'certificate-issued' && r.destinationIdentity === idOf('web'))!;
    assert.equal(issued.kind, 'security');
    assert.equal(issued.details?.['proxy'], 'web');
    assert.equal(issued.details?.['via'], 'join');
    assert.ok(rs.some((r) => r.event === 'join-token-minted' && r.details?.['proxy'] === 'web'));
    assert.ok(rs.some((r) => r.event === 'join-token-used' && r.details?.['proxy'] === 'web'));
  });

  test('a policy PUT names the token that made it; refusals name the token refused', async () => {
    const read = await api(cp.http, 'POST', '/v1/tokens', { scope: 'read', name: 'dash' });
    assert.equal(read.status, 201, JSON.stringify(read.body));
    const policy = { action: 'DENY', rules: [{ to: { paths: ['/x'] } }] };
    const refused = await api(cp.http, 'PUT', '/v1/services/users/policies/by-reader', policy, { authorization: `Bearer ${read.body.token}` });
    assert.equal(refused.status, 403);
    const unknown = await api(cp.http, 'PUT', '/v1/services/users/policies/by-nobody', policy, { authorization: `Bearer skein_aut_${'A'.repeat(43)}` });
    assert.equal(unknown.status, 401);
    const put = await api(cp.http, 'PUT', '/v1/services/users/policies/by-admin', policy);
    assert.ok([200, 201].includes(put.status), JSON.stringify(put.body));
    const rs = await linesWhen(controlAudit, (rs) => rs.some((r) => r.event === 'policy-changed' && r.policy === 'by-admin'), 'the policy change');
    const changed = rs.filter((r) => r.event === 'policy-changed' && r.policy === 'by-admin');
    assert.equal(changed.length, 1);
    assert.deepEqual(
      { actor: changed[0]!.actor, scope: changed[0]!.scope, service: changed[0]!.service, method: changed[0]!.method, rawPath: changed[0]!.rawPath, reason: changed[0]!.reason },
      { actor: 'admin', scope: 'admin', service: 'users', method: 'PUT', rawPath: '/v1/services/users/policies/by-admin', reason: 'AuthorizationPolicy put by "admin"' },
    );
    assert.equal(typeof changed[0]!.revision, 'number');
    const write = rs.find((r) => r.event === 'control-write' && r.rawPath === '/v1/services/users/policies/by-admin')!;
    assert.deepEqual({ actor: write.actor, scope: write.scope, status: write.details?.['status'] }, { actor: 'admin', scope: 'admin', status: put.status });
    const minted = rs.find((r) => r.event === 'api-token-minted')!;
    assert.deepEqual({ actor: minted.actor, token: minted.details?.['token'], tokenScope: minted.details?.['tokenScope'] }, { actor: 'admin', token: 'dash', tokenScope: 'read' });
    const refusals = rs.filter((r) => r.event === 'api-token-refused');
    const forbidden = refusals.find((r) => r.rawPath === '/v1/services/users/policies/by-reader')!;
    assert.deepEqual(
      { actor: forbidden.actor, scope: forbidden.scope, code: forbidden.code, status: forbidden.details?.['status'], sourceAddress: forbidden.sourceAddress },
      { actor: 'dash', scope: 'read', code: 'SKEIN_E_FORBIDDEN', status: 403, sourceAddress: '127.0.0.1' },
    );
    assert.match(forbidden.reason ?? '', /the token "dash" has scope "read"/);
    const unauthenticated = refusals.find((r) => r.rawPath === '/v1/services/users/policies/by-nobody')!;
    assert.deepEqual({ actor: unauthenticated.actor, code: unauthenticated.code, status: unauthenticated.details?.['status'] }, { actor: null, code: 'SKEIN_E_UNAUTHENTICATED', status: 401 });
    assert.ok(!rs.some((r) => r.policy === 'by-reader' || r.policy === 'by-nobody'), 'refused writes changed no policy');
  });

  test('heartbeats are not audited; skein audit --kind security --service users lists the policy changes', async () => {
    const hb = await api(cp.http, 'PUT', '/v1/services/users/instances/users-1/heartbeat');
    assert.ok(hb.status < 500);
    const r = await skein(['audit', controlAudit, '--kind', 'security', '--service', 'users', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const rs = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    assert.ok(rs.every((x) => x.kind === 'security' && x.service === 'users'));
    assert.deepEqual(rs.filter((x) => x.event === 'policy-changed').map((x) => x.policy), ['no-admin', 'dry', 'watch', 'by-admin']);
    const all = await lines(controlAudit);
    assert.deepEqual(all.filter((x) => (x.rawPath ?? '').endsWith('/heartbeat')), []);
  });
});
