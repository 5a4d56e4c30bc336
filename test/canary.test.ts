/**
 * Canaries against a real `skein up` (a child process) running two replicas of
 * test/fixtures/rollout-app.mjs under steady keep-alive load: a good canary promoted step by step
 * with no failed request; a canary answering 100% 500s rolled back by itself, its failures bounded
 * in time and under 1% of the run, the stable replicas untouched; a slow canary rolled back
 * naming p99; a canary that never becomes ready rolled back by its progress deadline. The
 * analysis reads the canary's own signals from the proxies (per version).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT, api, skein, waitFor } from './helpers.js';
import { Pacer, upFromText, type MeshUnderTest, type UpProcess } from './mesh-helpers.js';

/** Keep-alive at up to 32 connections; the 200s counted by the version that answered. */
const VERSIONS = { maxSockets: 32, tallyOf: (b: { version?: string }) => b.version };
const APP = join(ROOT, 'test', 'fixtures', 'rollout-app.mjs');
const INTERVAL_MS = 2000;

function meshFile(o: { version: string; env?: string; canary: string; rollout?: string }): string {
  return [
    'kind: Mesh',
    'name: canary-test',
    'services:',
    '  web:',
    '    command: node',
    `    args: [${JSON.stringify(APP)}]`,
    `    env: { APP_VERSION: ${o.version}${o.env === undefined ? '' : `, ${o.env}`} }`,
    `    version: ${o.version}`,
    '    replicas: 2',
    '    readiness: { type: http, path: /health, interval: 100ms, deadline: 2s }',
    `    canary: ${o.canary}`,
    ...(o.rollout === undefined ? [] : [`    rollout: ${o.rollout}`]),
    '',
  ].join('\n');
}

interface CanaryEvent {
  time: string;
  type: string;
  change: string;
  message: string;
  weight?: number;
  reason?: string;
  checks?: Array<{ check: string; value: number | null; threshold: number; ok: boolean; text: string }>;
}
interface Instance {
  id: string;
  version: string;
  state: string;
  pid: number | null;
}

describe('canaries against skein up (2 replicas, keep-alive load)', () => {
  let mesh: MeshUnderTest;
  let file: string;
  let up: UpProcess;
  let port: number;
  let C: string[];

  const web = () => mesh.service<{ revision: number; rollout: string | null; instances: Instance[] }>('web');
  const events = async (since: number): Promise<CanaryEvent[]> =>
    ((await api(up.control, 'GET', '/v1/events?service=web&type=canary&limit=1000')).body.events as CanaryEvent[]).filter((e) => Date.parse(e.time) >= since);
  const apply = async (text: string) => {
    await writeFile(file, text);
    const r = await skein(['apply', '-f', file, ...C], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
  };
  /** Waits for the canary's last event (promoted or rolled back), then for the rollout to settle. */
  const settled = async (since: number, end: 'canary-promoted' | 'canary-rolled-back', version: string) => {
    await waitFor(async () => (await events(since)).some((e) => e.change === end || e.change === (end === 'canary-promoted' ? 'canary-rolled-back' : 'canary-promoted')), { timeoutMs: 60_000, intervalMs: 200, what: `the canary to end (${end})` });
    const evs = await events(since);
    assert.ok(evs.some((e) => e.change === end), `the canary ended with ${end}: ${evs.map((e) => `${e.change}: ${e.message}`).join(' | ')}`);
    return waitFor(
      async () => {
        const s = await web();
        const live = s.instances.filter((i) => i.state !== 'stopped');
        return s.rollout === 'complete' && live.length === 2 && live.every((i) => i.version === version && i.state === 'ready') ? s : null;
      },
      { timeoutMs: 60_000, intervalMs: 200, what: `web back to two ready replicas of ${version}` },
    );
  };

  before(async () => {
    mesh = await upFromText('skein-canary-', meshFile({ version: 'v1', canary: '{ interval: 2s }' }), ['--scrape-interval', '1s']);
    ({ up, file, port } = mesh);
    C = ['-c', up.control];
    await web();
  });

  after(async () => {
    await mesh?.stop();
  });

  test('a good canary: 20%, 40%, then promoted; every request answered 200; all replicas on the new version', async (t) => {
    const load = new Pacer(port, '/', 100, VERSIONS);
    await waitFor(() => load.ok >= 100, { timeoutMs: 20_000, what: 'the load to run' });
    const since = Date.now();
    await apply(meshFile({ version: 'v2', canary: '{ interval: 2s, stepWeight: 20, maxWeight: 40, threshold: 3, minRequests: 5 }' }));
    // While it runs, `skein rollout status` shows the canary's weight and its steps.
    await waitFor(async () => (await events(since)).some((e) => e.change === 'canary-weight'), { timeoutMs: 30_000, intervalMs: 100, what: 'the first canary step' });
    const status = await skein(['rollout', 'status', 'web', ...C]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^ {2}canary: version v2 beside v1, progressing, weight (20|40)%, failed checks 0 of 3; last: set-weight /m);
    assert.match(status.stdout, /^ {4}step 1 at 0%: no checks -> set-weight$/m);
    await settled(since, 'canary-promoted', 'v2');
    await load.stop();
    assert.deepEqual(load.bad, [], 'no request failed');
    const evs = await events(since);
    assert.deepEqual(
      evs.filter((e) => e.change === 'canary-weight' || e.change === 'canary-promoted').map((e) => [e.change, e.weight]),
      [['canary-weight', 20], ['canary-weight', 40], ['canary-promoted', 40]],
      'two steps of 20%, then the promotion: maxWeight / stepWeight + 1 intervals',
    );
    const promoted = evs.find((e) => e.change === 'canary-promoted');
    assert.deepEqual(promoted?.checks?.map((c) => [c.check, c.ok]), [['requests', true], ['success-rate', true], ['p99', true]]);
    t.diagnostic(`${load.sent} requests, ${JSON.stringify([...load.tallies])}; promoted after ${Date.parse(promoted?.time ?? '') - since} ms: ${promoted?.checks?.map((c) => c.text).join(', ')}`);
    assert.ok((promoted?.checks?.[0]?.value ?? 0) >= 5, `the canary was judged on its own requests: ${promoted?.checks?.[0]?.text}`);
    assert.ok((load.tallies.get('v2') ?? 0) > 0 && (load.tallies.get('v1') ?? 0) > 0, `both versions answered: ${JSON.stringify([...load.tallies])}`);
    // The split is gone once promoted: the Service has no backends left.
    const svc = await api(up.control, 'GET', '/v1/services/web');
    assert.equal(svc.body.backends, undefined, JSON.stringify(svc.body));
  });

  test('a canary answering 100% 500s is rolled back by itself: its failures end within interval x threshold + interval and stay under 1% of the run; the stable replicas are untouched', async (t) => {
    const stable = (await web()).instances.filter((i) => i.state === 'ready').map((i) => [i.id, i.pid]);
    const load = new Pacer(port, '/', 200, VERSIONS);
    await waitFor(() => load.ok >= 200, { timeoutMs: 20_000, what: 'the load to run' });
    const since = Date.now();
    await apply(meshFile({ version: 'v3', env: 'FAIL_STATUS: "500"', canary: '{ interval: 2s, stepWeight: 5, maxWeight: 50, threshold: 3, minRequests: 5 }' }));
    await settled(since, 'canary-rolled-back', 'v2');
    // Keep the run going as a user's traffic would (the share is of the whole run's requests).
    await waitFor(() => load.sent >= 3000, { timeoutMs: 60_000, what: '3,000 requests in the run' });
    await load.stop();
    const evs = await events(since);
    const rolledBack = evs.find((e) => e.change === 'canary-rolled-back');
    assert.ok(rolledBack !== undefined);
    assert.equal(rolledBack.weight, 0, 'weight 0 at once');
    assert.ok(load.bad.length > 0, 'the canary did answer some requests (with its 500s)');
    assert.ok(load.bad.every((b) => b.startsWith('HTTP 500')), load.bad.slice(0, 5).join(' | '));
    const span = (load.badAt.at(-1) as number) - (load.badAt[0] as number);
    assert.ok(span <= INTERVAL_MS * 3 + INTERVAL_MS, `failures lasted ${span} ms (bound: interval x threshold + interval = ${INTERVAL_MS * 4} ms)`);
    const share = load.bad.length / load.sent;
    t.diagnostic(`${load.bad.length} of ${load.sent} failed over ${span} ms; rolled back: ${rolledBack.reason}`);
    assert.ok(share < 0.01, `${load.bad.length} of ${load.sent} requests failed (${(share * 100).toFixed(2)}%)`);
    const after = (await web()).instances.filter((i) => i.state === 'ready').map((i) => [i.id, i.pid]);
    assert.deepEqual(after, stable, 'the stable replicas kept running, untouched');
    const status = await skein(['rollout', 'status', 'web', ...C]);
    assert.equal(status.code, 0, status.stderr);
    const svc = await api(up.control, 'GET', '/v1/services/web');
    assert.equal(svc.body.backends, undefined, 'no split left behind');
  });

  test('a slow canary is rolled back, and the event says p99 was the reason', async () => {
    const load = new Pacer(port, '/', 100, VERSIONS);
    await waitFor(() => load.ok >= 100, { timeoutMs: 20_000, what: 'the load to run' });
    const since = Date.now();
    await apply(meshFile({ version: 'v4', env: 'DELAY_MS: "120"', canary: '{ interval: 2s, stepWeight: 20, maxWeight: 40, threshold: 2, minRequests: 5, p99: 60ms }' }));
    await settled(since, 'canary-rolled-back', 'v2');
    await load.stop();
    assert.deepEqual(load.bad, [], 'a slow canary fails no request');
    const rolledBack = (await events(since)).find((e) => e.change === 'canary-rolled-back');
    assert.match(rolledBack?.reason ?? '', /^2 failed checks \(threshold 2\); the last: p99 \d+\.\d ms > 60 ms$/);
    const failed = (await events(since)).filter((e) => e.change === 'canary-failed-check');
    assert.ok(failed.length >= 1 && failed.every((e) => /p99 \d+\.\d ms > 60 ms/.test(e.reason ?? '')), failed.map((e) => e.reason).join(' | '));
  });

  test('a canary that never becomes ready is rolled back by its progress deadline, before any traffic goes to it', async () => {
    const stable = (await web()).instances.filter((i) => i.state === 'ready').map((i) => [i.id, i.pid]);
    const since = Date.now();
    await apply(meshFile({ version: 'v5', env: 'READY: never', canary: '{ interval: 2s }', rollout: '{ progressDeadline: 4s }' }));
    await waitFor(
      async () => ((await api(up.control, 'GET', '/v1/events?service=web&type=rollout&limit=1000')).body.events as CanaryEvent[]).some((e) => Date.parse(e.time) >= since && e.change === 'rollout-deadline'),
      { timeoutMs: 30_000, intervalMs: 200, what: 'the progress deadline to roll the canary back' },
    );
    const evs = await events(since);
    assert.deepEqual(evs.map((e) => e.change), ['canary-started'], 'no weight was ever given to it');
    const back = await waitFor(
      async () => {
        const w = await web();
        return w.rollout === 'complete' && w.instances.filter((i) => i.state !== 'stopped').length === 2 ? w : null;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'web back on v2' },
    );
    assert.ok(back !== null);
    assert.deepEqual(back.instances.filter((i) => i.state === 'ready').map((i) => [i.id, i.pid]), stable, 'the stable replicas kept running');
    const svc = await api(up.control, 'GET', '/v1/services/web');
    assert.equal(svc.body.backends, undefined, 'no split was left behind');
  });
});
