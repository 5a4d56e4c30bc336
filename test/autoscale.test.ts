/**
 * The autoscaler against a real `skein up` (a child process) running test/fixtures/rollout-app.mjs
 * with autoscale {min 1, max 6, target rps 100}, short settings (scrape 1 s, interval 1 s,
 * window 3 s, scale-down stabilization 15 s) and paced keep-alive load through the service port:
 * 50 req/s stays at 1 replica; a step to 500 req/s reaches 5 ready replicas within 20 s; a drop
 * back to 50 req/s does not scale down before the stabilization window ends, then does; a rollout
 * (minReady 4 s) under a load that asks for more replicas freezes the autoscaler until it
 * completes; a bad autoscale section is refused with the field named and the mesh unchanged;
 * `skein stat web` shows the last decision.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT, api, skein, waitFor } from './helpers.js';
import { Pacer, upFromText, type MeshUnderTest, type UpProcess } from './mesh-helpers.js';

const APP = join(ROOT, 'test', 'fixtures', 'rollout-app.mjs');
const STABILIZATION_MS = 15_000;

function meshFile(version: string, autoscale = '{ min: 1, max: 6, target: { rps: 100 }, interval: 1s, window: 3s, scaleDown: { stabilization: 15s } }'): string {
  return [
    'kind: Mesh',
    'name: autoscale-test',
    'services:',
    '  web:',
    '    command: node',
    `    args: [${JSON.stringify(APP)}]`,
    `    env: { APP_VERSION: ${version} }`,
    `    version: ${version}`,
    '    readiness: { type: http, path: /health, interval: 100ms, deadline: 5s }',
    '    rollout: { minReady: 4s, progressDeadline: 30s }',
    `    autoscale: ${autoscale}`,
    '',
  ].join('\n');
}

interface WebStatus {
  replicas: number;
  ready: number;
  desired: number;
  revision: number;
  rollout: string | null;
  instances: Array<{ pid: number | null; state: string; revision: number }>;
  autoscale: { min: number; max: number; metric: string; target: number; frozen: boolean; last: { desired: number; value: number | null; limitedBy: string | null; message: string } | null } | null;
}
interface AutoscaleEvent {
  time: string;
  change: string;
  reason?: string;
  current: number;
  desired: number;
  value: number | null;
  message: string;
}

describe('the autoscaler under skein up (target rps 100 per replica, min 1, max 6)', () => {
  let mesh: MeshUnderTest;
  let file: string;
  let up: UpProcess;
  let port: number;
  let load: Pacer | null = null;

  const web = () => mesh.service<WebStatus>('web');
  const events = async (): Promise<AutoscaleEvent[]> => {
    const ev = await api(up.control, 'GET', '/v1/events?service=web&type=autoscale&limit=500');
    assert.equal(ev.status, 200);
    return ev.body.events as AutoscaleEvent[];
  };
  const setLoad = async (perSecond: number) => {
    await load?.stop();
    load = new Pacer(port, '/', perSecond, { maxSockets: 32 });
  };

  before(async () => {
    mesh = await upFromText('skein-autoscale-', meshFile('v1'), ['--scrape-interval', '1s']);
    ({ up, file, port } = mesh);
    await web();
  });

  after(async () => {
    await load?.stop();
    await mesh?.stop();
  });

  test('50 -> 500 req/s: 5 ready within 20 s; back to 50: no scale-down before the stabilization window ends', async (t) => {
    await setLoad(50);
    // Some decisions at 50 req/s: 0.5 of the target on one replica, at min.
    await waitFor(
      async () => {
        const v = (await web()).autoscale?.last?.value ?? 0;
        return v > 40 && v < 60;
      },
      { timeoutMs: 15_000, what: 'a decision at ~50 req/s' },
    );
    let s = await web();
    assert.deepEqual([s.desired, s.ready], [1, 1], s.autoscale?.last?.message);
    assert.deepEqual(s.autoscale && { min: s.autoscale.min, max: s.autoscale.max, metric: s.autoscale.metric, target: s.autoscale.target, frozen: s.autoscale.frozen }, { min: 1, max: 6, metric: 'rps', target: 100, frozen: false });

    await setLoad(500);
    const stepAt = Date.now();
    s = await waitFor(
      async () => {
        const w = await web();
        return w.ready >= 5 ? w : null;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: '5 ready replicas within 20 s of the step to 500 req/s' },
    ) as WebStatus;
    const tookMs = Date.now() - stepAt;
    t.diagnostic(`5 ready ${tookMs} ms after the step; ${s.autoscale?.last?.message}`);
    assert.ok(tookMs <= 20_000);
    const ups = (await events()).filter((e) => e.change === 'autoscale');
    assert.ok(ups.length >= 1 && ups.every((e) => e.desired > e.current), JSON.stringify(ups.map((e) => e.message)));
    assert.match(ups[0]!.message, /^web autoscaled from 1 to \d replicas: rps [\d.]+ per replica, target rps 100 per replica, 1 ready/);
    // Steady at 500 req/s: it settles at 5 (500 / 100, within the 10% tolerance) and stays.
    await waitFor(async () => (await web()).desired === 5, { timeoutMs: 10_000, what: 'settled at 5' });
    const settled = (await events()).length;
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((await web()).desired, 5);
    assert.deepEqual((await events()).slice(settled).filter((e) => e.change === 'autoscale'), [], 'no change under steady load');

    // Back to 50 req/s: the highest recommendation of the window is 5 until it leaves the window.
    await setLoad(50);
    const dropAt = Date.now();
    const seen: number[] = [];
    while (Date.now() - dropAt < STABILIZATION_MS - 1000) {
      seen.push((await web()).desired);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(seen.every((d) => d === 5), `held at 5 for the stabilization window: ${seen.join(',')}`);
    const held = (await events()).filter((e) => e.change === 'autoscale-held' && e.reason === 'stabilization' && Date.parse(e.time) >= dropAt);
    assert.equal(held.length, 1, `one held-back event for the window, not one per decision: ${JSON.stringify(held.map((e) => `${e.time} ${e.message}`))}`);
    assert.match(held[0]!.message, /^web stays at 5 replicas \(wants [1-4]\): rps [\d.]+ per replica, target rps 100 per replica, 5 ready; held by the scale-down stabilization window$/);
    await waitFor(async () => (await web()).desired === 1, { timeoutMs: 15_000, intervalMs: 200, what: 'the scale-down after the window' });
    // Down as the recommendations of the decaying window leave it (5, then 4, 3, ... as HPA does), none before it ended.
    const down = (await events()).filter((e) => e.change === 'autoscale' && e.desired < e.current);
    assert.ok(down.length >= 1, JSON.stringify(down));
    assert.ok(Date.parse(down[0]!.time) - dropAt >= STABILIZATION_MS, `no scale-down before the window ended: ${Date.parse(down[0]!.time) - dropAt} ms after the drop`);
    assert.match(down[0]!.message, /^web autoscaled from 5 to [1-4] replicas: rps [\d.]+ per replica, target rps 100 per replica, 5 ready; held by the scale-down stabilization window$/);

    const stat = await skein(['stat', 'web', '-c', up.control]);
    assert.equal(stat.code, 0, stat.stderr);
    assert.match(stat.stdout, /autoscale: 1\.\.6 replicas, target rps 100 per replica\nlast decision \(\S+\): web (stays at 1 replicas|autoscaled from \d to 1 replicas): rps [\d.]+ per replica/);
  });

  test('a rollout freezes it: 250 req/s during a rolling update leaves the replicas alone until it completes', async () => {
    await waitFor(async () => (await web()).ready === 1, { timeoutMs: 15_000, what: 'one replica left' });
    await writeFile(file, meshFile('v2'));
    const r = await skein(['apply', '-f', file, '-c', up.control], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // 250 req/s asks for 3 replicas (ceil(2.5)) while the rollout (minReady 4 s) runs; not 300,
    // which a paced load that runs a little fast (300.3) turns into ceil(3.003) = 4.
    await setLoad(250);
    const during: Array<{ desired: number; rollout: string | null; frozen: boolean | undefined }> = [];
    const s = await waitFor(
      async () => {
        const w = await web();
        during.push({ desired: w.desired, rollout: w.rollout, frozen: w.autoscale?.frozen });
        return w.revision === 2 && w.rollout === 'complete' ? w : null;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: 'revision 2 rolled out' },
    ) as WebStatus;
    const rolling = during.filter((d) => d.rollout === 'progressing');
    assert.ok(rolling.length >= 10, `sampled the rollout (minReady 4s): ${rolling.length}`);
    assert.ok(rolling.every((d) => d.desired === 1 && d.frozen === true), `the replicas stay while the rollout runs: ${JSON.stringify(rolling)}`);
    const frozen = (await events()).filter((e) => e.change === 'autoscale-held' && e.reason === 'frozen');
    assert.equal(frozen.length, 1, JSON.stringify(frozen));
    assert.match(frozen[0]!.message, /^web stays at 1 replicas: rps not read, target rps 100 per replica, \d ready; frozen: a rollout is in progress$/);
    // The rollout completed at the replicas it started with: its own event says so (the status read
    // after it may already show the autoscaler's next decision, which the freeze no longer holds).
    const rollouts = (await api(up.control, 'GET', '/v1/events?service=web&type=rollout&limit=500')).body.events as Array<{ change: string; revision: number; message: string }>;
    const complete = rollouts.filter((e) => e.change === 'rollout-complete' && e.revision === s.revision);
    assert.deepEqual(complete.map((e) => e.message), ['web: revision 2 is rolled out: 1 of 1 replicas available']);
    // Then it scales for the 250 req/s.
    const after = await waitFor(
      async () => {
        const w = await web();
        return w.desired >= 3 ? w : null;
      },
      { timeoutMs: 15_000, what: 'the scale-up after the rollout' },
    ) as WebStatus;
    assert.equal(after.desired, 3, after.autoscale?.last?.message);
  });

  test('a bad autoscale section is refused with the field named, the running mesh unchanged', async () => {
    const was = await web();
    for (const [autoscale, field] of [
      ['{ max: 6, target: { rps: 0 } }', 'services.web.autoscale.target.rps'],
      ['{ min: 7, max: 6, target: { rps: 100 } }', 'services.web.autoscale.min'],
      ['{ max: 101, target: { rps: 100 } }', 'services.web.autoscale.max'],
      ['{ max: 6, target: { cpu: 50 } }', 'services.web.autoscale.target.cpu'],
    ] as const) {
      await writeFile(file, meshFile('v2', autoscale));
      const r = await skein(['apply', '-f', file, '-c', up.control], { timeoutMs: 30_000 });
      assert.notEqual(r.code, 0, autoscale);
      assert.match(r.stderr, new RegExp(field.replace('services.web.', 'service "web": ').replace(/\./g, '\\.')), `${autoscale}: ${r.stderr}`);
    }
    const now = await web();
    assert.deepEqual([now.revision, now.autoscale?.max, now.autoscale?.target], [was.revision, 6, 100]);
  });
});
