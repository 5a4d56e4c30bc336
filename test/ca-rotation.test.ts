/**
 * Root rotation end to end: a real control plane (1-minute leaves), two `skein proxy` processes
 * with mTLS strict, an app, and steady load through them while `skein ca rotate` takes the three
 * steps. Not one request may fail. Afterwards a leaf of the old root is refused by an inbound
 * listener (`unknown-issuer`), and a TLS session ticket from before the removal does not resume.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import http from 'node:http';
import { join } from 'node:path';
import { api, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { meshTlsRequest, metricValue, registerInstance, startProxy, waitForProxyReady, type MeshTlsExchange, type ProxyProcess } from './proxy-helpers.js';
import { createCsr, generateKeyPair } from '../src/identity/certs.js';
import { certFingerprint, type RotationStatus } from '../src/api/ca.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

let cp: ControlProcess;
let A: ProxyProcess;
let B: ProxyProcess;
let outPort: number;
let inPort: number;

async function mint(proxy: string, services: string[]): Promise<string> {
  const r = await api(cp.http, 'POST', '/v1/ca/tokens', { proxy, services });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.token as string;
}

async function meshProxy(id: string, services: string[], workloads: string[]): Promise<ProxyProcess> {
  const p = await startProxy({ control: cp.http, workloads, args: ['--mtls', 'strict', '--join-token', await mint(id, services), '--id', id] });
  cleanups.push(() => p.stop());
  await waitForProxyReady(p);
  return p;
}

function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within 10 s from 127.0.0.1:${port}`)));
    req.on('error', reject);
    req.end();
  });
}

/** A leaf for `web` from the CA as it issues now (a join token of a test "proxy"). */
async function leaf(): Promise<{ key: string; cert: string; roots: string[] }> {
  const kp = await generateKeyPair();
  const r = await api(cp.http, 'POST', '/v1/ca/certificates', { service: 'web', csr: await createCsr(kp.privateKeyPem) }, { authorization: `Bearer ${await mint('tester', ['web'])}` });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return { key: kp.privateKeyPem, cert: [r.body.certificate, ...r.body.chain].join(''), roots: r.body.roots };
}

/** One request to B's inbound listener as a meshed peer presenting `client` (resuming `session` if given). */
function meshRequest(client: { key: string; cert: string; roots: string[] }, session?: Buffer): Promise<MeshTlsExchange> {
  return meshTlsRequest(inPort, client, { host: 'users', session });
}

const rotation = async () => (await api(cp.http, 'GET', '/v1/ca/rotation')).body as RotationStatus;
const refusals = async (p: ProxyProcess, reason: string) => metricValue((await api(p.admin, 'GET', '/metrics')).body as string, 'skein_proxy_tls_refusals_total', { direction: 'inbound', reason }) ?? 0;

/** Waits until the step after the current one is no longer blocked by the proxies (they polled, renewed and announced). */
async function ready(what: string): Promise<RotationStatus> {
  return waitFor<RotationStatus | null>(async () => {
    const r = await rotation();
    return r.blocked === null && r.proxies.length === 2 ? r : null;
  }, { timeoutMs: 60_000, intervalMs: 250, what }) as Promise<RotationStatus>;
}

before(async () => {
  const dir = await tempDir('skein-rotation-');
  cleanups.push(dir.remove);
  cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off', '--leaf-lifetime', '1m'] });
  cleanups.push(() => cp.stop());
  const app = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => app.close(() => r())));
  const appPort = (app.address() as { port: number }).port;
  B = await meshProxy('proxy-b', ['users'], [`name=users-1,service=users,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`]);
  A = await meshProxy('proxy-a', ['web'], ['name=web-1,service=web,outbound=127.0.0.1:0']);
  inPort = B.workload('users-1').inbound!.port;
  outPort = A.workload('web-1').outbound!.port;
  await registerInstance(cp.http, 'users', 'users-1', inPort, { labels: { 'skein.io/inbound-proxy': 'true' } });
  await waitFor(async () => ((await api(A.admin, 'GET', '/debug/endpoints')).body?.services?.users?.endpoints?.length ?? 0) >= 1, { timeoutMs: 10_000, what: 'proxy A to know users' });
});

test('a root rotation (add, switch, remove) under steady load: 0 failed requests; then old leaves and old sessions are refused', { timeout: 240_000 }, async () => {
  const start = await waitFor<RotationStatus | null>(async () => {
    const r = await rotation();
    return r.proxies.length === 2 && r.proxies.every((p) => p.workloads.length === 1) ? r : null;
  }, { timeoutMs: 20_000, what: 'both proxies announced with their certificates' }) as RotationStatus;
  const old = start.roots[0]!.fingerprint;
  assert.deepEqual(start.proxies.map((p) => [p.proxy, p.workloads[0]!.roots, p.workloads[0]!.leafRoot]).sort(), [['proxy-a', [old], old], ['proxy-b', [old], old]]);
  const oldLeaf = await leaf();

  // Steady load through A -> B for the whole rotation: two loops, a new client connection each time.
  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const loop = async () => {
    while (!stop) {
      const r = await get(outPort, 'users').catch((e: Error) => ({ status: 0, body: e.message }));
      if (r.status === 200) ok++;
      else failures.push(`${r.status} ${r.body.slice(0, 300)}`);
    }
  };
  const loops = [loop(), loop()];
  try {
    // 1. add: the bundle is [old, new]; issuing stays on the old root.
    const add = await skein(['ca', 'rotate', '--step', 'add', '--control', cp.http]);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /new root added to the trust bundle; issuing stays on the old root/);
    const added = await rotation();
    const fresh = added.roots[1]!.fingerprint;
    assert.deepEqual(added.roots.map((r) => [r.fingerprint, r.role]), [[old, 'old'], [fresh, 'new']]);
    assert.equal((await api(cp.http, 'GET', '/v1/ca')).body.issuer.root, old);

    // A proxy that announces it trusts only the old root holds the switch back, named.
    const lag = await api(cp.http, 'PUT', '/v1/proxies/lagging', { admin: '127.0.0.1:1', workloads: [{ name: 'x-1', service: 'x', tls: { roots: [old], leafRoot: old, leafIssuer: '01' } }] });
    assert.equal(lag.status, 200, JSON.stringify(lag.body));
    const early = await skein(['ca', 'rotate', '--step', 'switch', '--control', cp.http]);
    assert.notEqual(early.code, 0);
    assert.match(early.stderr, /SKEIN_E_CA_ROTATION|cannot switch/);
    assert.match(early.stderr, /lagging \(x-1: trusts /);
    assert.equal((await api(cp.http, 'DELETE', '/v1/proxies/lagging')).status, 200);

    // 2. switch, once both proxies trust the new root (they polled, renewed, announced).
    const trusting = await ready('both proxies to trust the new root');
    for (const p of trusting.proxies) assert.deepEqual(p.workloads[0]!.roots, [old, fresh], p.proxy);
    const status = await skein(['ca', 'status', '--control', cp.http]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /rotation\s+added \(next: --step switch\)/);
    assert.match(status.stdout, new RegExp(`proxy-a\\s+web-1\\s+${old.slice(0, 16)},${fresh.slice(0, 16)}\\s+${old.slice(0, 16)}\\s+yes\\s+NO`));
    const sw = await skein(['ca', 'rotate', '--step', 'switch', '--control', cp.http]);
    assert.equal(sw.code, 0, sw.stderr);
    assert.equal((await api(cp.http, 'GET', '/v1/ca')).body.issuer.root, fresh);

    // 3. remove, once every leaf chains to the new root (the proxies renewed at once).
    const onNew = await ready("both proxies' leaves on the new root");
    for (const p of onNew.proxies) assert.equal(p.workloads[0]!.leafRoot, fresh, p.proxy);
    // A ticket from before the removal, on a leaf of the old root: it resumes now.
    const first = await meshRequest(oldLeaf);
    assert.equal(first.status, 200, 'the old leaf is still trusted before the removal');
    assert.ok(first.session !== undefined, 'a session ticket');
    const resumed = await meshRequest(oldLeaf, first.session);
    assert.equal(resumed.reused, true, 'the ticket resumes before the removal (so what follows means something)');
    const before = await refusals(B, 'unknown-issuer');
    const rm = await skein(['ca', 'rotate', '--step', 'remove', '--control', cp.http]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual((await rotation()).roots.map((r) => r.fingerprint), [fresh]);
    // Each proxy drops the old root (and renews, so its inbound listener swaps its context).
    await waitFor(async () => (await rotation()).proxies.every((p) => p.workloads[0]!.roots.length === 1 && p.workloads[0]!.roots[0] === fresh), { timeoutMs: 30_000, what: 'both proxies to trust only the new root' });
    // A little load past the removal, on new connections.
    const atRemoval = ok;
    await waitFor(() => ok >= atRemoval + 50, { timeoutMs: 30_000, what: '50 requests after the removal' });

    // A leaf of the old root is refused, with its reason; the old ticket does not resume.
    const refused = await meshRequest(oldLeaf);
    assert.equal(refused.status, 403);
    assert.equal(refused.error, 'SKEIN_E_MTLS_REFUSED');
    assert.equal(refused.reason, 'unknown-issuer');
    const replay = await meshRequest(oldLeaf, first.session);
    assert.equal(replay.reused, false, 'a session from before the removal does not resume');
    assert.equal(replay.status, 403);
    assert.equal(replay.reason, 'unknown-issuer');
    assert.equal((await refusals(B, 'unknown-issuer')) - before, 2, 'both counted by B as unknown-issuer');
    // A leaf of the new root is served.
    assert.equal((await meshRequest(await leaf())).status, 200);
  } finally {
    stop = true;
    await Promise.all(loops);
  }
  assert.deepEqual(failures, [], `${ok} ok`);
  assert.ok(ok > 200, `${ok} requests through the rotation`);

  // Each step is a security event in the control plane's log, and the proxies' bundle changes are mesh events.
  const steps = cp.logs.filter((l) => l.includes('"security: ca-rotation"')).map((l) => (JSON.parse(l) as { security: { step: string } }).security.step);
  assert.deepEqual(steps, ['add', 'switch', 'remove']);
  await waitFor(
    async () => ((await api(cp.http, 'GET', '/v1/events?type=certificate')).body?.events ?? []).some((e: { message: string }) => /trust bundle changed: trusts roots [0-9a-f]{16}; removed [0-9a-f]{16} \(TLS ticket keys rotated, sessions forgotten\)/.test(e.message)),
    { timeoutMs: 20_000, what: "a proxy's bundle change (the removal) in the mesh events" },
  );
  assert.equal(certFingerprint((await api(cp.http, 'GET', '/v1/ca')).body.roots[0]), (await rotation()).roots[0]!.fingerprint);
});
