/**
 * A proxy on two control-plane replicas (a real 3-member etcd cluster, `skein control --store
 * etcd` twice), with an app behind an inbound listener (its own proxy) and paced load through a
 * caller proxy's outbound listener:
 * - kill -9 the replica the caller watches: it moves to the other (its /debug/endpoints says so)
 *   and sees changes made there; 0 failed requests;
 * - kill every replica: 0 failed requests between the running services;
 * - restart the caller while every replica is down: it serves from its persisted state (--state-dir:
 *   /ready and /debug/endpoints say 'stale', with the time it was saved), requests succeed; a
 *   replica back on its address: the caller goes live again and writes its state anew.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { copyFile, mkdir, readFile, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { startEtcdCluster, type EtcdCluster } from './etcd-cluster.js';
import { Pacer } from './mesh-helpers.js';
import { registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

interface ControlView {
  url: string;
  urls: Array<{ url: string; inUse: boolean; failures: number }>;
  connected: boolean;
  status: string;
  stateSavedAt: string | null;
  revision: number | null;
}

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
  const stateDir = () => join(dir.path, 'caller-state');
  const controlArgs = (name: string, httpAt = '127.0.0.1:0') => ['--store', 'etcd', '--etcd', cluster.endpoints.join(','), '--replica', name, '--http', httpAt];
  const both = () => `${a.http},${b.http}`;
  const startCaller = () =>
    startProxy({ control: both(), workloads: ['name=client,outbound=127.0.0.1:0'], args: ['--state-dir', stateDir()], env: { SKEIN_TOKEN: token } });

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
    callee = await startProxy({ control: both(), workloads: [`name=app,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`], env: { SKEIN_TOKEN: token } });
    const inbound = callee.workload('app').inbound?.port as number;
    await registerInstance(a.http, 'app', 'app-1', inbound);
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
      await waitFor(() => load.ok >= 10, { what: 'requests through the mesh' });
      await a.stop('SIGKILL');
      await waitFor(async () => {
        const d = await debug(caller);
        return d.control.url === b.http && d.control.connected;
      }, { timeoutMs: 10_000, what: 'the caller watching b' });
      const moved = await debug(caller);
      assert.deepEqual(moved.control.urls.map((u) => [u.url, u.inUse]), [[a.http, false], [b.http, true]]);
      assert.ok((moved.control.urls[0]?.failures ?? 0) >= 1, 'a is reported as failed');
      // Live on b: a second instance registered through b reaches the caller.
      await registerInstance(b.http, 'app', 'app-2', callee.workload('app').inbound?.port as number);
      await waitFor(async () => (await debug(caller)).services['app']?.endpoints.length === 2, { what: 'app-2 seen through b' });
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
    const saved = JSON.parse(await readFile(join(stateDir(), 'proxy-state.json'), 'utf8')) as { savedAt: string; control: string[]; watch: { instances: Array<{ id: string }> } };
    assert.deepEqual(saved.control, [a.http, b.http]);
    assert.deepEqual(saved.watch.instances.map((i) => i.id).sort(), ['app-1', 'app-2']);

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
