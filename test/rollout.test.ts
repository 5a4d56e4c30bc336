/**
 * Revisions and rolling updates against a real `skein up` (a child process) running four
 * replicas of test/fixtures/rollout-app.mjs, driven with the real CLI (`skein rollout ...`):
 * an update of the version under ~300 req/s of keep-alive load with no failed request and the
 * replicas between 3 and 5 with at least 3 ready all along (sampled from GET /v1/mesh); undo;
 * a revision that never becomes ready, rolled back by itself at its progress deadline;
 * pause and resume; bad files refused with the field named and the mesh unchanged.
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

function meshFile(o: { version: string; ready?: 'never'; replicas?: number; extra?: string }): string {
  return [
    'kind: Mesh',
    'name: rollout-test',
    'services:',
    '  web:',
    '    command: node',
    `    args: [${JSON.stringify(APP)}]`,
    `    env: { APP_VERSION: ${o.version}${o.ready === undefined ? '' : `, READY: ${o.ready}`} }`,
    `    version: ${o.version}`,
    `    replicas: ${o.replicas ?? 4}`,
    '    readiness: { type: http, path: /health, interval: 100ms, deadline: 2s }',
    '    restart: { backoff: { base: 100ms, cap: 500ms } }',
    '    rollout: { progressDeadline: 4s }',
    ...(o.extra === undefined ? [] : [o.extra]),
    '',
  ].join('\n');
}

interface Instance {
  id: string;
  revision: number;
  version: string;
  state: string;
  pid: number | null;
}
interface WebStatus {
  replicas: number;
  ready: number;
  revision: number;
  rollout: string | null;
  instances: Instance[];
}

describe('skein rollout against skein up (4 replicas)', () => {
  let mesh: MeshUnderTest;
  let file: string;
  let up: UpProcess;
  let port: number;
  let C: string[];

  const web = () => mesh.service<WebStatus>('web');
  /** `skein rollout apply -f`, or `skein apply -f` (which sends a kind: Mesh file to the same place). */
  const apply = async (text: string, via: 'rollout' | 'apply' = 'rollout') => {
    await writeFile(file, text);
    return skein([...(via === 'rollout' ? ['rollout'] : []), 'apply', '-f', file, ...C], { timeoutMs: 30_000 });
  };
  const waitComplete = async (revision: number, what: string): Promise<WebStatus> =>
    waitFor<WebStatus | null>(
      async () => {
        const s = await web();
        return s.revision === revision && s.rollout === 'complete' && s.instances.length === 4 && s.ready === 4 ? s : null;
      },
      { timeoutMs: 60_000, intervalMs: 100, what },
    ) as Promise<WebStatus>;

  before(async () => {
    mesh = await upFromText('skein-rollout-', meshFile({ version: 'v1' }));
    ({ up, file, port } = mesh);
    C = ['-c', up.control];
    await web();
  });

  after(async () => {
    await mesh?.stop();
  });

  test('v1 -> v2 under ~300 req/s keep-alive load: 0 non-2xx, 0 connection errors, 3..5 replicas with >= 3 ready all along', async (t) => {
    const load = new Pacer(port, '/', 300, VERSIONS);
    await waitFor(() => load.ok >= 150, { timeoutMs: 20_000, what: 'the load to run' });
    const samples: Array<{ live: number; ready: number }> = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const s = await web();
        // A replica is live from its start until its process exited: draining and stopping ones count.
        samples.push({ live: s.instances.filter((i) => i.state !== 'stopped').length, ready: s.instances.filter((i) => i.state === 'ready').length });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      const r = await apply(meshFile({ version: 'v2' }));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /web\s+2\s+rolling out \(env, version changed\)/);
      await waitComplete(2, 'revision 2 rolled out');
      const v2At = load.tallies.get('v2') ?? 0;
      await waitFor(() => (load.tallies.get('v2') ?? 0) > v2At + 300, { timeoutMs: 20_000, what: 'more load on v2' });
    } finally {
      sampling = false;
      await sampler;
      await load.stop();
    }
    t.diagnostic(`sent ${load.sent}, ok ${load.ok}, versions ${JSON.stringify([...load.tallies])}, ${samples.length} samples`);
    assert.deepEqual(load.bad, [], 'no failed request');
    assert.equal(load.ok, load.sent);
    assert.ok((load.tallies.get('v1') ?? 0) > 0 && (load.tallies.get('v2') ?? 0) > 300, 'both versions served');
    assert.ok(samples.length > 20, `sampled often enough: ${samples.length}`);
    const live = samples.map((s) => s.live);
    const ready = samples.map((s) => s.ready);
    assert.ok(Math.min(...live) >= 3 && Math.max(...live) <= 5, `live replicas within 3..5: ${Math.min(...live)}..${Math.max(...live)}`);
    assert.ok(Math.max(...live) === 5, 'maxSurge 1 was used');
    assert.ok(Math.min(...ready) >= 3, `at least 3 ready: min ${Math.min(...ready)}`);
    // The new replicas are registered with the new version (the proxies report per version).
    const reg = await api(up.control, 'GET', '/v1/services/web/instances');
    assert.deepEqual(
      (reg.body.instances as Array<{ version: string }>).map((i) => i.version),
      ['v2', 'v2', 'v2', 'v2'],
    );
    const st = await skein(['rollout', 'status', 'web', ...C]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /web: revision 2 complete: revision 2 is rolled out: 4 of 4 replicas available/);
    const ev = await api(up.control, 'GET', '/v1/events?service=web&type=rollout&limit=200');
    const changes = (ev.body.events as Array<{ change?: string }>).map((e) => e.change);
    for (const c of ['rollout-started', 'rollout-step', 'rollout-complete']) assert.ok(changes.includes(c), `an event ${c}: ${changes.join(',')}`);
  });

  test('skein rollout undo: back to v1 as revision 3; history lists it', async () => {
    const r = await skein(['rollout', 'undo', 'web', ...C]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /web: rolling out revision 3 \(undo to revision 1\)/);
    const s = await waitComplete(3, 'revision 3 (v1 again) rolled out');
    assert.deepEqual(s.instances.map((i) => i.version), ['v1', 'v1', 'v1', 'v1']);
    const h = await skein(['rollout', 'history', 'web', '-o', 'json', ...C]);
    const revs = (JSON.parse(h.stdout) as { revisions: Array<{ number: number; version: string; cause: string; current: boolean }> }).revisions;
    assert.deepEqual(
      revs.map((x) => [x.number, x.version, x.cause, x.current]),
      [
        [2, 'v2', 'apply: env, version changed', false],
        [3, 'v1', 'undo to revision 1', true],
      ],
    );
    const missing = await skein(['rollout', 'undo', 'web', '--to-revision', '1', ...C]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /service "web" has no revision 1 \(it keeps the last 10: 2, 3\).*SKEIN_E_NOT_FOUND/);
  });

  test('a revision that never becomes ready is rolled back by itself at its progress deadline (4s)', async () => {
    const before = await web();
    const keep = new Set(before.instances.map((i) => i.id));
    const r = await apply(meshFile({ version: 'v3', ready: 'never' }));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await waitFor(async () => (await web()).instances.some((i) => i.version === 'v3'), { timeoutMs: 10_000, what: 'a v3 replica starting' });
    const s = await waitComplete(5, 'the rollback (revision 5) complete');
    assert.deepEqual(s.instances.map((i) => i.version), ['v1', 'v1', 'v1', 'v1']);
    // The old replicas that were kept served all along; the rollback started at most one again.
    assert.ok(s.instances.filter((i) => keep.has(i.id)).length >= 3, `the v1 replicas kept: ${JSON.stringify(s.instances)}`);
    const ev = await api(up.control, 'GET', '/v1/events?service=web&type=rollout&limit=200');
    const deadline = (ev.body.events as Array<{ change?: string; message: string }>).find((e) => e.change === 'rollout-deadline');
    assert.ok(deadline, 'an event says the deadline passed');
    assert.match(deadline.message, /web: revision 4 made no progress for 4s \(progressDeadline\): 0 of \d new replicas available; rolling back/);
    const h = await api(up.control, 'GET', '/v1/mesh/services/web/revisions');
    const last = (h.body.revisions as Array<{ number: number; cause: string; version: string }>).at(-1);
    assert.equal(last?.number, 5);
    assert.equal(last?.version, 'v1');
    assert.match(last?.cause ?? '', /^rollback: revision 4 made no progress/);
  });

  test('pause holds a rollout where it is; resume finishes it', async () => {
    const p = await skein(['rollout', 'pause', 'web', ...C]);
    assert.equal(p.code, 0, p.stderr);
    // `skein apply -f` of a mesh file does what `skein rollout apply -f` does.
    const r = await apply(meshFile({ version: 'v6' }), 'apply');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^web +6 +rolling out \(env, version changed\)$/m);
    const st = await api(up.control, 'GET', '/v1/mesh/services/web/rollout');
    assert.equal(st.body.paused, true);
    assert.equal(st.body.revision, 6);
    await waitFor(async () => (await api(up.control, 'GET', '/v1/mesh/services/web/rollout')).body.rollout?.phase === 'paused', { timeoutMs: 5000, what: 'phase paused' });
    // Paused: nothing of revision 6 starts, even after the progress deadline would have passed.
    await new Promise((res) => setTimeout(res, 4500));
    const held = await web();
    assert.deepEqual(held.instances.map((i) => i.version), ['v1', 'v1', 'v1', 'v1'], 'nothing rolled out while paused');
    assert.equal(held.rollout, 'paused');
    const again = await skein(['rollout', 'pause', 'web', ...C]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /are paused already/);
    const res = await skein(['rollout', 'resume', 'web', ...C]);
    assert.equal(res.code, 0, res.stderr);
    const s = await waitComplete(6, 'revision 6 rolled out after resume');
    assert.deepEqual(s.instances.map((i) => i.version), ['v6', 'v6', 'v6', 'v6']);
  });

  test('bad files are refused with the field named, and the mesh stays as it is', async () => {
    const before = await web();
    const cases: Array<[string, string, RegExp]> = [
      ['replicas out of range', meshFile({ version: 'v7', replicas: 101 }), /service "web": replicas must be <= 100/],
      ['a bad maxSurge', meshFile({ version: 'v7' }).replace('rollout: { progressDeadline: 4s }', 'rollout: { maxSurge: "120%" }'), /rollout\.maxSurge must be a number of replicas \(0\.\.100\) or a percentage/],
      ['an unknown service', meshFile({ version: 'v7', extra: '  api:\n    command: node' }), /services\.api: mesh "rollout-test" runs no service "api"/],
      ['another mesh', meshFile({ version: 'v7' }).replace('name: rollout-test', 'name: other'), /name: the file is mesh "other", this is mesh "rollout-test"/],
    ];
    for (const [what, text, want] of cases) {
      for (const via of ['rollout', 'apply'] as const) {
        const r = await apply(text, via);
        assert.equal(r.code, 1, `${what} (skein ${via}): ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, want, `${what} (skein ${via})`);
      }
    }
    // Through the API too: the field is named.
    const bad = await api(up.control, 'PUT', '/v1/mesh', { kind: 'Mesh', name: 'rollout-test', services: { web: { command: 'node', replicas: -1 } } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.field, 'services.web.replicas');
    const after = await web();
    assert.equal(after.revision, before.revision);
    assert.deepEqual(after.instances.map((i) => [i.id, i.version, i.state]), before.instances.map((i) => [i.id, i.version, i.state]));
  });
});
