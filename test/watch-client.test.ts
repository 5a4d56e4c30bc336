/**
 * The proxy's view of the registry against a real control plane: the watch client follows the
 * stream, resumes by revision within one control-plane lifetime, keeps serving the last sets
 * while the control plane is down, and converges on a fresh snapshot after it restarts on the
 * same address. The client's clock is manual, so each reconnection happens exactly when the test
 * says (the sockets and the control plane are real).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/core/clock.js';
import { Backoff } from '../src/core/backoff.js';
import type { EndpointSet } from '../src/discovery/endpoint.js';
import { WatchClient, type WatchStreamError } from '../src/discovery/watch-client.js';
import { api, metricSample, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

const ids = (s: EndpointSet) => s.list().map((e) => e.id);

async function put(cp: ControlProcess, service: string, id: string, body: Record<string, unknown> = {}): Promise<void> {
  const r = await api(cp.http, 'PUT', `/v1/services/${service}/instances/${id}`, { address: '127.0.0.1', port: 8000, ...body });
  assert.ok(r.status === 200 || r.status === 201, `PUT ${service}/${id}: ${r.status} ${JSON.stringify(r.body)}`);
}

async function del(cp: ControlProcess, service: string, id: string): Promise<void> {
  const r = await api(cp.http, 'DELETE', `/v1/services/${service}/instances/${id}`);
  assert.equal(r.status, 200, `DELETE ${service}/${id}: ${JSON.stringify(r.body)}`);
}

async function beat(cp: ControlProcess, service: string, id: string, status: 'healthy' | 'unhealthy'): Promise<void> {
  const r = await api(cp.http, 'PUT', `/v1/services/${service}/instances/${id}/heartbeat`, { status, reason: `test says ${status}` });
  assert.equal(r.status, 200, `heartbeat ${service}/${id}: ${JSON.stringify(r.body)}`);
}

/** The healthy instance ids the control plane itself lists for a service. */
async function healthyIds(cp: ControlProcess, service: string): Promise<string[]> {
  const r = await api(cp.http, 'GET', `/v1/services/${service}/instances`);
  if (r.status === 404) return [];
  assert.equal(r.status, 200);
  return (r.body.instances as Array<{ id: string }>).map((i) => i.id);
}

async function resumes(cp: ControlProcess): Promise<number> {
  const text = await (await fetch(`${cp.http}/metrics`)).text();
  const v = metricSample(text, 'skein_watch_resumes_total');
  assert.ok(v !== undefined, 'skein_watch_resumes_total is exposed');
  return v;
}

async function revision(cp: ControlProcess): Promise<number> {
  return (await api(cp.http, 'GET', '/v1/health')).body.revision;
}

describe('watch client against a real control plane', () => {
  const clock = new ManualClock();
  // Delays are at most 500 ms of the manual clock: advancing 1 s always triggers the next attempt.
  const backoff = new Backoff({ baseMs: 100, capMs: 1000, rng: () => 0.5 });
  const errors: WatchStreamError[] = [];
  const updates: Array<[string, string[]]> = [];
  let dataDir: string;
  let cp: ControlProcess;
  let port: number;
  let client: WatchClient;

  /** Fires the pending reconnection and waits for the attempt it starts to settle. */
  async function reconnect(): Promise<void> {
    assert.equal(client.status, 'waiting');
    const attempts = client.stats.attempts;
    clock.advance(1000);
    assert.equal(client.stats.attempts, attempts + 1, 'one reconnection attempt');
    await waitFor(() => client.status !== 'connecting', { what: 'the reconnection attempt to settle' });
  }

  before(async () => {
    const d = await tempDir('skein-watch-client-');
    cleanups.push(d.remove);
    dataDir = d.path;
    cp = await startControl({ dataDir });
    cleanups.push(() => cp.stop());
    port = cp.httpPort;
    await put(cp, 'web', 'web-1');
    await put(cp, 'web', 'web-2', { port: 8002, zone: 'z2', labels: { track: 'stable' } });
    await put(cp, 'web', 'web-3', { port: 8003, check: { type: 'ttl', ttl: '10m' } });
    await put(cp, 'web', 'web-4', { port: 8004, check: { type: 'ttl', ttl: '10m', initialState: 'unhealthy' } });
    await put(cp, 'api', 'api-1', { port: 9000 });
    client = new WatchClient({ controlUrl: cp.http, service: null, clock, backoff, onError: (e) => errors.push(e) });
    client.on('update', (service, set) => updates.push([service, ids(set)]));
    cleanups.push(() => client.stop());
    client.start();
  });

  test('the initial snapshot yields the healthy endpoints of every service', async () => {
    await waitFor(() => client.revision !== null, { what: 'the snapshot' });
    assert.equal(client.connected, true);
    assert.equal(client.stats.snapshots, 1);
    assert.equal(client.revision, await revision(cp));
    assert.deepEqual(ids(client.endpoints('web')), ['web-1', 'web-2', 'web-3'], 'web-4 starts unhealthy');
    assert.deepEqual(ids(client.endpoints('api')), ['api-1']);
    assert.deepEqual(client.services(), ['api', 'web']);
    const w2 = client.endpoints('web').get('web/web-2');
    assert.deepEqual({ address: w2?.address, port: w2?.port, zone: w2?.zone, labels: w2?.labels }, { address: '127.0.0.1', port: 8002, zone: 'z2', labels: { track: 'stable' } });
    assert.equal(client.endpoints('unknown').size, 0);
  });

  test('registrations, deregistrations and health changes are reflected', async () => {
    await put(cp, 'web', 'web-5', { port: 8005 });
    await waitFor(() => client.endpoints('web').has('web/web-5'), { what: 'web-5 added' });
    await del(cp, 'web', 'web-2');
    await waitFor(() => !client.endpoints('web').has('web/web-2'), { what: 'web-2 removed' });
    await beat(cp, 'web', 'web-3', 'unhealthy');
    await waitFor(() => !client.endpoints('web').has('web/web-3'), { what: 'web-3 out when unhealthy' });
    assert.deepEqual(client.services(), ['api', 'web']);
    await beat(cp, 'web', 'web-4', 'healthy');
    await beat(cp, 'web', 'web-3', 'healthy');
    await waitFor(() => client.endpoints('web').has('web/web-3') && client.endpoints('web').has('web/web-4'), { what: 'web-3 and web-4 healthy' });
    assert.deepEqual(ids(client.endpoints('web')), await healthyIds(cp, 'web'));
    assert.equal(client.revision, await revision(cp));
    // Every change to the set was reported, in order.
    const web = updates.filter(([s]) => s === 'web').map(([, i]) => i);
    assert.deepEqual(web.slice(-5), [
      ['web-1', 'web-2', 'web-3', 'web-5'],
      ['web-1', 'web-3', 'web-5'],
      ['web-1', 'web-5'],
      ['web-1', 'web-4', 'web-5'],
      ['web-1', 'web-3', 'web-4', 'web-5'],
    ]);
    assert.equal(client.stats.snapshots, 1);
    assert.equal(client.stats.disconnects, 0);
  });

  test('a dropped connection resumes with since=<revision>: only the missed diffs, no snapshot', async () => {
    const resumesBefore = await resumes(cp);
    const rev = client.revision;
    client.dropConnection();
    assert.equal(client.connected, false);
    assert.equal(client.status, 'waiting');
    assert.equal(client.url().searchParams.get('since'), String(rev));
    // Changes while the client is away.
    await put(cp, 'web', 'web-6', { port: 8006 });
    await del(cp, 'web', 'web-5');
    await reconnect();
    await waitFor(() => client.endpoints('web').has('web/web-6') && !client.endpoints('web').has('web/web-5'), { what: 'the missed changes' });
    assert.equal(client.connected, true);
    assert.equal(client.stats.snapshots, 1, 'no new snapshot');
    assert.equal(await resumes(cp), resumesBefore + 1, 'the control plane counted a resume');
    assert.deepEqual(ids(client.endpoints('web')), await healthyIds(cp, 'web'));
    assert.equal(client.revision, await revision(cp));
    assert.equal(errors.at(-1)?.kind, 'dropped');
  });

  test('while the control plane is down the client keeps the last sets and keeps retrying', async () => {
    const web = client.endpoints('web');
    const apiSet = client.endpoints('api');
    const rev = client.revision;
    let disconnected = 0;
    client.once('disconnected', () => disconnected++);
    assert.equal(await cp.stop('SIGTERM'), 0);
    await waitFor(() => !client.connected, { what: 'the client to notice the control plane is gone' });
    assert.equal(disconnected, 1);
    assert.equal(client.endpoints('web'), web, 'the same set object: nothing was cleared');
    assert.equal(client.endpoints('api'), apiSet);
    assert.equal(client.revision, rev);
    // Two attempts against the dead address: refused, and the sets still stand.
    for (let i = 0; i < 2; i++) {
      await reconnect();
      assert.equal(client.status, 'waiting');
      assert.equal(errors.at(-1)?.kind, 'network');
      assert.match(errors.at(-1)?.message ?? '', /ECONNREFUSED/);
    }
    assert.equal(client.endpoints('web'), web);
    assert.deepEqual(ids(web), ['web-1', 'web-3', 'web-4', 'web-6']);
  });

  test('after a restart on the same address, a snapshot brings the changes made before the client reconnected', async () => {
    const snapshots = client.stats.snapshots;
    cp = await startControl({ dataDir, args: ['--http', `127.0.0.1:${port}`] });
    cleanups.push(() => cp.stop());
    assert.equal(cp.httpPort, port);
    // Changed while the client is still disconnected (its next attempt is on the manual clock).
    await del(cp, 'web', 'web-1');
    await put(cp, 'web', 'web-7', { port: 8007 });
    await del(cp, 'api', 'api-1');
    await reconnect();
    await waitFor(() => client.endpoints('web').has('web/web-7'), { what: 'the snapshot after the restart' });
    assert.equal(client.connected, true);
    assert.equal(client.stats.snapshots, snapshots + 1, 'the history starts empty after a restart: a snapshot, not a resume');
    assert.equal(await resumes(cp), 0);
    assert.ok(!client.endpoints('web').has('web/web-1'), 'an endpoint deregistered while away is gone');
    assert.equal(client.endpoints('api').size, 0, 'a service that vanished is cleared');
    assert.deepEqual(client.services(), ['web']);
    assert.deepEqual(ids(client.endpoints('web')), await healthyIds(cp, 'web'));
    assert.equal(client.revision, await revision(cp));

    // Live again: diffs flow, and a resume within this lifetime is a resume.
    await put(cp, 'web', 'web-8', { port: 8008 });
    await waitFor(() => client.endpoints('web').has('web/web-8'), { what: 'web-8 added after the restart' });
    client.dropConnection();
    await put(cp, 'api', 'api-2', { port: 9002 });
    await reconnect();
    await waitFor(() => client.endpoints('api').has('api/api-2'), { what: 'api-2 after the resume' });
    assert.equal(await resumes(cp), 1);
    assert.equal(client.stats.snapshots, snapshots + 1);
    assert.deepEqual(client.services(), ['api', 'web']);
  });

  test('stop() closes the stream and leaves no timer', async () => {
    const subscribers = async () => (await api(cp.http, 'GET', '/v1/health')).body.watchSubscribers as number;
    assert.equal(await subscribers(), 1);
    client.stop();
    assert.equal(client.status, 'stopped');
    assert.equal(clock.pending, 0);
    await waitFor(async () => (await subscribers()) === 0, { what: 'the control plane to see the stream closed' });
    assert.ok(client.endpoints('web').size > 0, 'the last sets stay readable after stop');
  });
});
