/**
 * A proxy on two control-plane replicas (a real 3-member etcd cluster, `skein control --store
 * etcd` twice), with an app behind an inbound listener (its own proxy) and paced load through a
 * caller proxy's outbound listener, mTLS strict between them:
 * - kill -9 the replica the caller watches: it moves to the other (its /debug/endpoints says so),
 *   sees changes made there, and both proxies announce themselves there; 0 failed requests;
 * - kill every replica: 0 failed requests between the running services;
 * - restart the caller while every replica is down: it serves from its persisted state (--state-dir:
 *   /ready and /debug/endpoints say 'stale', with the time it was saved; its certificate and key
 *   come from there too), requests succeed; a
 *   replica back on its address: the caller goes live again and writes its state anew.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { api, closedPort, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { startEtcdCluster, type EtcdCluster } from './etcd-cluster.js';
import { Pacer } from './mesh-helpers.js';
import { mintJoinToken, registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

interface ControlView {
  url: string;
  urls: Array<{ url: string; inUse: boolean; failures: number }>;
  connected: boolean;
  status: string;
  stateSavedAt: string | null;
  revision: number | null;
}

/** The instances are the callee proxy's inbound listener: reached over mTLS. */
const INBOUND = { labels: { 'skein.io/inbound-proxy': 'true' } };

const debug = async (p: ProxyProcess) => (await api(p.admin, 'GET', '/debug/endpoints')).body as { ready: boolean; control: ControlView; services: Record<string, { endpoints: Array<{ id: string; port: number }> }> };

describe('skein proxy on two control-plane replicas: failover and static stability', () => {
  let cluster: EtcdCluster;
  let dir: { path: string; remove: () => Promise<void> };
  let a: ControlProcess;
  let b: ControlProcess;
  let app: http.Server;
  let callee: ProxyProcess;
  let caller: ProxyProcess;
  let token: string;
  let callerJoin: string;
  const stateDir = () => join(dir.path, 'caller-state');
  const controlArgs = (name: string, httpAt = '127.0.0.1:0') => ['--store', 'etcd', '--etcd', cluster.endpoints.join(','), '--replica', name, '--http', httpAt];
  const both = () => `${a.http},${b.http}`;
  // mTLS strict between the proxies: certificates, renewals and announcements over the replicas too.
  // A restarted caller is given its spent join token again: it holds its certificates from the state.
  const startCaller = () =>
    startProxy({ control: both(), workloads: ['name=client,outbound=127.0.0.1:0'], args: ['--state-dir', stateDir(), '--mtls', 'strict', '--join-token', callerJoin, '--id', 'caller'], env: { SKEIN_TOKEN: token } });

  before(async () => {
    cluster = await startEtcdCluster({ members: 3 });
    dir = await tempDir('skein-proxy-ha-');
    a = await startControl({ dataDir: join(dir.path, 'a'), args: controlArgs('a') });
    await mkdir(join(dir.path, 'b'), { recursive: true });
    await copyFile(join(dir.path, 'a', 'admin.token'), join(dir.path, 'b', 'admin.token'));
    b = await startControl({ dataDir: join(dir.path, 'b'), args: controlArgs('b') });
    token = (await readFile(join(dir.path, 'a', 'admin.token'), 'utf8')).trim();
    app = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ ok: true, path: req.url }));
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const appPort = (app.address() as AddressInfo).port;
    const calleeJoin = await mintJoinToken(a.http, 'callee', ['app']);
    callerJoin = await mintJoinToken(a.http, 'caller', ['client']);
    callee = await startProxy({ control: both(), workloads: [`name=app,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`], args: ['--mtls', 'strict', '--join-token', calleeJoin, '--id', 'callee'], env: { SKEIN_TOKEN: token } });
    const inbound = callee.workload('app').inbound?.port as number;
    await registerInstance(a.http, 'app', 'app-1', inbound, INBOUND);
    caller = await startCaller();
    await waitForProxyReady(caller);
    await waitFor(async () => (await debug(caller)).services['app']?.endpoints.length === 1, { what: 'the caller sees app-1' });
  });
  after(async () => {
    await caller?.stop();
    await callee?.stop();
    await a?.stop();
    await b?.stop();
    await new Promise((r) => app?.close(r));
    await cluster?.close();
    await dir?.remove();
  });

  test('kill -9 the replica the proxy watches: it moves to the other and sees changes there; 0 failed requests', async () => {
    const before = await debug(caller);
    assert.equal(before.control.url, a.http, 'the first URL given is used first');
    assert.deepEqual(before.control.urls.map((u) => [u.url, u.inUse]), [[a.http, true], [b.http, false]]);
    const load = new Pacer(caller.workload('client').outbound?.port as number, '/hello', 50, { headers: { host: 'app' } });
    try {
      await waitFor(() => {
        if (load.bad.length > 0) throw new Error(load.bad[0]);
        return load.ok >= 10;
      }, { what: 'requests through the mesh' });
      await a.stop('SIGKILL');
      await waitFor(async () => {
        const d = await debug(caller);
        return d.control.url === b.http && d.control.connected;
      }, { timeoutMs: 10_000, what: 'the caller watching b' });
      const moved = await debug(caller);
      assert.deepEqual(moved.control.urls.map((u) => [u.url, u.inUse]), [[a.http, false], [b.http, true]]);
      assert.ok((moved.control.urls[0]?.failures ?? 0) >= 1, 'a is reported as failed');
      // Live on b: a second instance registered through b reaches the caller.
      await registerInstance(b.http, 'app', 'app-2', callee.workload('app').inbound?.port as number, INBOUND);
      await waitFor(async () => (await debug(caller)).services['app']?.endpoints.length === 2, { what: 'app-2 seen through b' });
      // Announcements (with the proxies' certificates, over b's mTLS listener) follow to b.
      await waitFor(async () => {
        const ids = ((await api(b.http, 'GET', '/v1/proxies')).body.proxies as Array<{ id: string }>).map((p) => p.id).sort();
        return ids.join(',') === 'callee,caller';
      }, { timeoutMs: 15_000, what: 'both proxies announced to b' });
      const sent = load.ok;
      await waitFor(() => load.ok >= sent + 25, { what: 'more requests after the failover' });
    } finally {
      await load.stop();
    }
    assert.deepEqual(load.bad, [], 'no request failed');
    assert.ok(load.ok >= 35, `${load.ok} requests answered`);
  });

  test('every replica down: 0 failed requests between the running services', async () => {
    const load = new Pacer(caller.workload('client').outbound?.port as number, '/still', 50, { headers: { host: 'app' } });
    try {
      await b.stop('SIGKILL');
      await waitFor(async () => !(await debug(caller)).control.connected, { what: 'the caller has lost every replica' });
      const sent = load.ok;
      await waitFor(() => load.ok >= sent + 50, { what: 'requests while no control plane runs' });
    } finally {
      await load.stop();
    }
    assert.deepEqual(load.bad, []);
  });

  test('restart the proxy while every replica is down: it serves its persisted state; live again when a replica is back', async () => {
    // The state was written after the last change (0600), and is written on stop.
    await caller.stop();
    const st = await stat(join(stateDir(), 'proxy-state.json'));
    assert.equal(st.mode & 0o777, 0o600);
    const saved = JSON.parse(await readFile(join(stateDir(), 'proxy-state.json'), 'utf8')) as {
      savedAt: string;
      control: string[];
      watch: { instances: Array<{ id: string }> };
      tls: { ca: { trustDomain: string }; credentials: Array<{ service: string; keyPem: string }> };
    };
    assert.deepEqual(saved.control, [a.http, b.http]);
    assert.deepEqual(saved.watch.instances.map((i) => i.id).sort(), ['app-1', 'app-2']);
    assert.deepEqual(saved.tls.credentials.map((c) => c.service), ['client']);
    assert.match(saved.tls.credentials[0]?.keyPem ?? '', /BEGIN PRIVATE KEY/);

    caller = await startCaller();
    await waitForProxyReady(caller);
    const ready = await api(caller.admin, 'GET', '/ready');
    assert.equal(ready.body.source, 'stale');
    assert.equal(ready.body.stateSavedAt, saved.savedAt);
    const d = await debug(caller);
    assert.equal(d.control.status, 'stale');
    assert.equal(d.control.stateSavedAt, saved.savedAt);
    assert.equal(d.services['app']?.endpoints.length, 2);
    assert.ok(caller.logs.some((l) => l.includes('serving the persisted state (stale)')), 'the log says so');
    assert.ok(caller.logs.some((l) => l.includes('certificates restored from the proxy state')), 'its certificate came from the state');

    const load = new Pacer(caller.workload('client').outbound?.port as number, '/from-state', 50, { headers: { host: 'app' } });
    try {
      await waitFor(() => load.ok >= 25, { what: 'requests served from the persisted state' });
      // A replica comes back on its address: the proxy goes live and writes its state anew.
      a = await startControl({ dataDir: join(dir.path, 'a'), args: controlArgs('a', new URL(a.http).host) });
      await waitFor(async () => (await debug(caller)).control.status === 'connected', { timeoutMs: 20_000, what: 'the caller live again' });
      const live = await debug(caller);
      assert.equal(live.control.stateSavedAt, null);
      assert.deepEqual((await api(caller.admin, 'GET', '/ready')).body, { ready: true });
      await waitFor(async () => JSON.parse(await readFile(join(stateDir(), 'proxy-state.json'), 'utf8')).savedAt > saved.savedAt, { what: 'the state written again' });
    } finally {
      await load.stop();
    }
    assert.deepEqual(load.bad, []);
  });
});

test('bad flags and a refused state: a URL twice, --state-dir without a control plane; a corrupt state file is logged and not served', async () => {
  const dir = await tempDir('skein-proxy-ha-flags-');
  try {
    const port = await closedPort();
    const cases: Array<[string[], RegExp]> = [
      [['--control', `http://127.0.0.1:${port},http://127.0.0.1:${port}/`], new RegExp(`--control: http://127\\.0\\.0\\.1:${port} is given twice`)],
      [['--no-control', '--state-dir', dir.path, '--workload', `name=a,inbound=127.0.0.1:0,app=127.0.0.1:${port}`], /--state-dir: without a control plane there is no state to keep/],
    ];
    for (const [flags, message] of cases) {
      const r = await skein(['proxy', '--admin', '127.0.0.1:0', ...flags], { timeoutMs: 20_000 });
      assert.equal(r.code, 2, `${flags.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    await writeFile(join(dir.path, 'proxy-state.json'), '{"format": "skein-proxy-state/1", "savedAt": ');
    const p = await startProxy({ control: `http://127.0.0.1:${port}`, workloads: ['name=client,outbound=127.0.0.1:0'], args: ['--state-dir', dir.path], env: { SKEIN_TOKEN: 'unused' } });
    try {
      const line = p.logs.map((l) => JSON.parse(l) as { code?: string; msg: string }).find((l) => l.code === 'SKEIN_E_PROXY_STATE');
      assert.ok(line !== undefined, p.logs.join('\n'));
      assert.match(line.msg, new RegExp(`^the proxy state file ${join(dir.path, 'proxy-state.json').replace(/[.]/g, '\\.')} is corrupt: not JSON .*; not using it$`));
      assert.equal((await api(p.admin, 'GET', '/ready')).status, 503, 'nothing to serve');
    } finally {
      await p.stop();
    }
  } finally {
    await dir.remove();
  }
});
