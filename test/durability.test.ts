/**
 * Durability of the embedded store and restart behaviour: every acknowledged write survives
 * `kill -9`, also when the write is held back (an acknowledgement never comes before its write;
 * that the write is synced is checked by a spy in src/control/store/embedded.test.ts, as kill -9
 * cannot tell); TTL instances get a grace period after a restart; a data dir serves one control
 * plane at a time.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { api, mapLimit, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

async function control(dataDir: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ControlProcess> {
  const cp = await startControl({ dataDir, args, env });
  cleanups.push(() => cp.stop('SIGKILL'));
  return cp;
}

async function dataDir(prefix: string): Promise<string> {
  const d = await tempDir(prefix);
  cleanups.push(d.remove);
  return d.path;
}

describe('durability', () => {
  test('kill -9 right after the last acknowledgement loses nothing (1,000 concurrent registrations)', async () => {
    const dir = await dataDir('skein-kill9-');
    const cp = await control(dir);
    const N = 1000;
    const ids = Array.from({ length: N }, (_, i) => `inst-${String(i).padStart(4, '0')}`);
    const acked = new Map<string, number>();
    await mapLimit(ids, 50, async (id, i) => {
      const service = `svc-${i % 10}`;
      const r = await api(cp.http, 'PUT', `/v1/services/${service}/instances/${id}`, {
        address: `10.1.${Math.floor(i / 250)}.${i % 250}`,
        port: 1000 + i,
        labels: { n: String(i) },
      });
      assert.equal(r.status, 201, `PUT ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      acked.set(id, r.body.revision);
    });
    // No pause: the process dies the moment the last write is acknowledged.
    cp.child.kill('SIGKILL');
    await cp.stop();
    assert.equal(cp.child.signalCode, 'SIGKILL');
    assert.equal(acked.size, N);
    const maxAcked = Math.max(...acked.values());
    assert.equal(new Set(acked.values()).size, N, 'every registration got its own revision');

    const cp2 = await control(dir);
    const h = await api(cp2.http, 'GET', '/v1/health');
    assert.equal(h.body.instances, N);
    assert.equal(h.body.services, 10);
    assert.ok(h.body.revision >= maxAcked, `revision ${h.body.revision} >= ${maxAcked}`);
    const seen = new Map<string, any>();
    for (let s = 0; s < 10; s++) {
      const r = await api(cp2.http, 'GET', `/v1/services/svc-${s}/instances?all=true`);
      assert.equal(r.status, 200);
      assert.equal(r.body.instances.length, N / 10);
      for (const inst of r.body.instances) seen.set(inst.id, inst);
    }
    assert.equal(seen.size, N);
    for (const [i, id] of ids.entries()) {
      const inst = seen.get(id);
      assert.ok(inst !== undefined, `${id} survived`);
      assert.ok(inst.revision >= (acked.get(id) as number), `${id}: revision ${inst.revision} >= ${acked.get(id)}`);
      assert.equal(inst.port, 1000 + i);
      assert.equal(inst.service, `svc-${i % 10}`);
      assert.deepEqual(inst.labels, { n: String(i) });
      assert.equal(inst.status, 'healthy');
    }
    // New writes continue above everything that was acknowledged before the crash.
    const r = await api(cp2.http, 'PUT', '/v1/services/svc-0/instances/after-crash', { address: '10.9.9.9', port: 80 });
    assert.equal(r.status, 201);
    assert.ok(r.body.revision > maxAcked);
    await cp2.stop();
  });

  test('an acknowledgement waits for the write: with every write held 300 ms, kill -9 at the first 201 loses nothing acknowledged', async () => {
    // Without the hold, a write made just after its early acknowledgement would still land before
    // the kill; with it (SKEIN_TEST_STORE_WRITE_DELAY_MS, test only) an early 201 would be lost.
    const HOLD_MS = 300;
    const dir = await dataDir('skein-early-ack-');
    const cp = await control(dir, [], { SKEIN_TEST_STORE_WRITE_DELAY_MS: String(HOLD_MS) });
    const ids = Array.from({ length: 20 }, (_, i) => `early-${i}`);
    const acked: string[] = [];
    let firstAckMs = -1;
    const t0 = Date.now();
    await Promise.allSettled(
      ids.map(async (id) => {
        const r = await api(cp.http, 'PUT', `/v1/services/web/instances/${id}`, { address: '10.0.0.1', port: 80 });
        assert.equal(r.status, 201, `PUT ${id}: ${r.status} ${JSON.stringify(r.body)}`);
        acked.push(id); // every 201 that arrives, even after the kill, was an acknowledgement
        if (firstAckMs < 0) {
          firstAckMs = Date.now() - t0;
          cp.child.kill('SIGKILL');
        }
      }),
    );
    await cp.stop();
    assert.equal(cp.child.signalCode, 'SIGKILL');
    assert.ok(acked.length >= 1, 'a registration was acknowledged');
    assert.ok(firstAckMs >= HOLD_MS, `the first 201 came ${firstAckMs} ms after the PUTs began, before the held write (${HOLD_MS} ms)`);

    const cp2 = await control(dir);
    const stored = await api(cp2.http, 'GET', '/v1/services/web/instances?all=true');
    const survived = new Set((stored.body?.instances ?? []).map((i: any) => i.id as string));
    assert.deepEqual(acked.filter((id) => !survived.has(id)), [], `acknowledged before the kill but lost (${acked.length} acknowledged, ${survived.size} stored)`);
    await cp2.stop();
  });

  test('deregistrations and status changes survive kill -9 too', async () => {
    const dir = await dataDir('skein-kill9b-');
    const cp = await control(dir);
    for (const id of ['a', 'b', 'c']) {
      assert.equal((await api(cp.http, 'PUT', `/v1/services/web/instances/${id}`, { address: '10.0.0.1', port: 80, check: { type: 'ttl', ttl: '1h' } })).status, 201);
    }
    assert.equal((await api(cp.http, 'DELETE', '/v1/services/web/instances/b')).status, 200);
    const hb = await api(cp.http, 'PUT', '/v1/services/web/instances/c/heartbeat', { status: 'unhealthy', reason: 'disk full' });
    assert.equal(hb.body.instance.status, 'unhealthy');
    const def = await api(cp.http, 'PUT', '/v1/services/web', { labels: { team: 'x' } });
    assert.equal(def.status, 201);
    cp.child.kill('SIGKILL');
    await cp.stop();

    const cp2 = await control(dir);
    const all = await api(cp2.http, 'GET', '/v1/services/web/instances?all=true');
    assert.deepEqual(all.body.instances.map((i: any) => [i.id, i.status, i.reason]), [
      ['a', 'healthy', 'initial state (ttl check)'],
      ['c', 'unhealthy', 'disk full'],
    ]);
    assert.deepEqual((await api(cp2.http, 'GET', '/v1/services/web')).body.definition.labels, { team: 'x' });
    assert.equal((await api(cp2.http, 'GET', '/v1/health')).body.revision, def.body.revision);
    await cp2.stop();
  });

  test('after a restart, TTL instances get ttl + grace before they expire', async () => {
    const dir = await dataDir('skein-grace-');
    const cp = await control(dir, ['--ttl-grace', '3s']);
    const ttl = { type: 'ttl', ttl: '2s' };
    for (const id of ['beating', 'silent']) {
      const r = await api(cp.http, 'PUT', `/v1/services/pay/instances/${id}`, { address: '10.0.0.5', port: 80, check: ttl });
      assert.equal(r.status, 201);
      assert.equal(r.body.instance.status, 'healthy');
    }
    cp.child.kill('SIGKILL');
    await cp.stop();

    const t0 = Date.now();
    const cp2 = await control(dir, ['--ttl-grace', '3s']);
    // Right after the restart both are still healthy (their TTL had not run out before the crash).
    const first = await api(cp2.http, 'GET', '/v1/services/pay/instances');
    assert.deepEqual(first.body.instances.map((i: any) => i.id), ['beating', 'silent']);

    // One keeps heartbeating; the other never does.
    let beating = true;
    const beats: Array<Promise<unknown>> = [];
    const timer = setInterval(() => {
      if (beating) beats.push(api(cp2.http, 'PUT', '/v1/services/pay/instances/beating/heartbeat', {}));
    }, 400);
    try {
      const expired = await waitFor(
        async () => {
          const r = await api(cp2.http, 'GET', '/v1/services/pay/instances/silent');
          return r.body.instance.status === 'unhealthy' ? r.body.instance : null;
        },
        { timeoutMs: 15_000, what: 'the silent instance to expire' },
      );
      const observed = Date.now();
      // ttl (2 s) + grace (3 s), counted from a start that came after t0.
      assert.ok(observed - t0 >= 5000 - 50, `expired ${observed - t0}ms after the restart began; expected at least ttl + grace`);
      assert.ok(Date.parse(expired.since) - t0 >= 5000 - 50, `status changed at +${Date.parse(expired.since) - t0}ms`);
      assert.match(expired.reason, /TTL expired/);
      const b = await api(cp2.http, 'GET', '/v1/services/pay/instances/beating');
      assert.equal(b.body.instance.status, 'healthy', 'the heartbeating one stays healthy');
      const listed = await api(cp2.http, 'GET', '/v1/services/pay/instances');
      assert.deepEqual(listed.body.instances.map((i: any) => i.id), ['beating']);
      const ev = await api(cp2.http, 'GET', '/v1/events?service=pay');
      assert.ok(!ev.body.events.some((e: any) => e.id === 'beating' && e.to === 'unhealthy'), 'no expiry for the heartbeating instance');
      assert.ok(ev.body.events.some((e: any) => e.id === 'silent' && e.from === 'healthy' && e.to === 'unhealthy' && /TTL expired/.test(e.reason)));
    } finally {
      beating = false;
      clearInterval(timer);
      await Promise.allSettled(beats);
    }
    for (const p of beats) assert.equal(((await p) as { status: number }).status, 200);
    await cp2.stop();
  });

  test('a second control plane on the same data dir fails with one clear line', async () => {
    const dir = await dataDir('skein-lock-');
    const cp = await control(dir);
    const r = await skein(['control', '--data-dir', dir, '--http', '127.0.0.1:0', '--dns', '127.0.0.1:0'], { timeoutMs: 20_000 });
    assert.notEqual(r.code, 0);
    assert.notEqual(r.code, null, 'it exits by itself');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
    assert.match(lines[0] as string, /^skein: .*data dir .* in use by another control plane/);
    assert.ok(lines[0]?.includes(dir));
    assert.doesNotMatch(r.stdout, /control plane ready/);
    // The first one is unaffected.
    assert.equal((await api(cp.http, 'GET', '/v1/health')).status, 200);
    await cp.stop();
    assert.equal(cp.child.exitCode, 0, 'SIGTERM is a clean shutdown');
    // Once it has stopped, the data dir can be opened again.
    const cp2 = await control(dir);
    assert.equal((await api(cp2.http, 'GET', '/v1/health')).status, 200);
    await cp2.stop();
  });
});
