/**
 * The watch stream over real HTTP: snapshot then diffs, per-service filtering, resuming with
 * `since` (and SSE's Last-Event-ID), history limits, restarts, slow subscribers, and the
 * long-poll form of the listings.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { api, mapLimit, metricSample, openWatch, startControl, tempDir, waitFor, type ControlProcess, type StreamMessage, type WatchStream } from './helpers.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

async function control(args: string[] = [], dataDir?: string): Promise<ControlProcess> {
  let dir = dataDir;
  if (dir === undefined) {
    const d = await tempDir('skein-watch-');
    cleanups.push(d.remove);
    dir = d.path;
  }
  const cp = await startControl({ dataDir: dir, args });
  cleanups.push(() => cp.stop());
  return cp;
}

async function watch(cp: ControlProcess, path: string, headers?: Record<string, string>): Promise<WatchStream> {
  const w = await openWatch(cp.http, path, headers === undefined ? {} : { headers });
  cleanups.push(() => w.close());
  return w;
}

async function revision(cp: ControlProcess): Promise<number> {
  return (await api(cp.http, 'GET', '/v1/health')).body.revision;
}

async function metrics(cp: ControlProcess): Promise<string> {
  return (await fetch(`${cp.http}/metrics`)).text();
}

function assertIncreasing(msgs: StreamMessage[]): void {
  for (let i = 1; i < msgs.length; i++) {
    assert.ok((msgs[i] as StreamMessage).revision > (msgs[i - 1] as StreamMessage).revision, `revisions increase: ${msgs.map((m) => m.revision).join(', ')}`);
  }
}

const summary = (m: StreamMessage) => [m.type, m.revision, m.instance?.id ?? m.service];

describe('watch stream', () => {
  let cp: ControlProcess;
  before(async () => {
    cp = await control();
  });

  test('snapshot, then add / update / remove with increasing revisions', async () => {
    for (const id of ['s-1', 's-2']) assert.equal((await api(cp.http, 'PUT', `/v1/services/snap/instances/${id}`, { address: '10.0.0.1', port: 80 })).status, 201);
    const rev0 = await revision(cp);
    const w = await watch(cp, '/v1/watch?service=snap');
    assert.equal(w.status, 200);
    assert.match(String(w.headers['content-type']), /^application\/x-ndjson/);
    assert.equal(w.headers['x-skein-index'], String(rev0));
    const [snap] = await w.waitForCount(1);
    assert.equal(snap?.type, 'snapshot');
    assert.equal(snap?.revision, rev0);
    assert.equal(snap?.service, 'snap');
    assert.deepEqual(snap?.instances.map((i: any) => [i.id, i.status]), [['s-1', 'healthy'], ['s-2', 'healthy']]);

    const add = await api(cp.http, 'PUT', '/v1/services/snap/instances/s-3', { address: '10.0.0.3', port: 81 });
    const upd = await api(cp.http, 'PUT', '/v1/services/snap/instances/s-1', { address: '10.0.0.1', port: 80, weight: 9 });
    const unchanged = await api(cp.http, 'PUT', '/v1/services/snap/instances/s-2', { address: '10.0.0.1', port: 80 });
    assert.equal(unchanged.body.changed, false);
    const del = await api(cp.http, 'DELETE', '/v1/services/snap/instances/s-2');
    const msgs = await w.waitForCount(4);
    assert.deepEqual(msgs.slice(1).map(summary), [
      ['add', add.body.revision, 's-3'],
      ['update', upd.body.revision, 's-1'],
      ['remove', del.body.revision, 's-2'],
    ]);
    assert.equal(msgs[1]?.instance.port, 81);
    assert.equal(msgs[2]?.instance.weight, 9);
    assert.equal(msgs[3]?.service, 'snap');
    assertIncreasing(msgs);
    assert.ok((msgs[1] as StreamMessage).revision > rev0);
  });

  test('a service filter passes only that service', async () => {
    const w = await watch(cp, '/v1/watch?service=alpha');
    const [snap] = await w.waitForCount(1);
    assert.equal(snap?.type, 'snapshot');
    assert.deepEqual(snap?.instances, [], 'unknown service: an empty snapshot');
    await api(cp.http, 'PUT', '/v1/services/beta/instances/b-1', { address: '10.0.0.1', port: 80 });
    const a1 = await api(cp.http, 'PUT', '/v1/services/alpha/instances/a-1', { address: '10.0.0.2', port: 80 });
    await api(cp.http, 'PUT', '/v1/services/beta', { labels: { x: 'y' } });
    await api(cp.http, 'DELETE', '/v1/services/beta/instances/b-1');
    const a2 = await api(cp.http, 'DELETE', '/v1/services/alpha/instances/a-1');
    const msgs = await w.waitForCount(3);
    assert.deepEqual(msgs.slice(1).map(summary), [
      ['add', a1.body.revision, 'a-1'],
      ['remove', a2.body.revision, 'a-1'],
    ]);
    for (const m of msgs) assert.equal(m.service, 'alpha');

    // The unfiltered stream sees both.
    const all = await watch(cp, '/v1/watch');
    const [s] = await all.waitForCount(1);
    assert.equal(s?.service, null);
    assert.ok(s?.services.some((x: any) => x.name === 'beta' && x.definition?.labels?.x === 'y'));
    assert.ok(s?.services.some((x: any) => x.name === 'snap'));
    assert.deepEqual(new Set(s?.instances.map((i: any) => i.service)), new Set(['snap']));
  });

  test('resume: reconnecting with since gets exactly the missed changes, then live ones', async () => {
    const w = await watch(cp, '/v1/watch');
    await w.waitForCount(1);
    await api(cp.http, 'PUT', '/v1/services/res/instances/r-1', { address: '10.0.0.1', port: 80 });
    const seen = await w.waitForCount(2);
    const last = (seen[1] as StreamMessage).revision;
    assert.equal(seen[1]?.type, 'add');
    const subscribers = (await api(cp.http, 'GET', '/v1/health')).body.watchSubscribers;
    w.close();
    await waitFor(async () => (await api(cp.http, 'GET', '/v1/health')).body.watchSubscribers === subscribers - 1, { what: 'the closed stream to be dropped' });

    // Changes while disconnected: every kind of message.
    const expected: Array<[string, number, string]> = [];
    let r = await api(cp.http, 'PUT', '/v1/services/res/instances/r-2', { address: '10.0.0.2', port: 80 });
    expected.push(['add', r.body.revision, 'r-2']);
    r = await api(cp.http, 'PUT', '/v1/services/res/instances/r-1', { address: '10.0.0.1', port: 80, weight: 3 });
    expected.push(['update', r.body.revision, 'r-1']);
    r = await api(cp.http, 'PUT', '/v1/services/res/instances/r-ttl', { address: '10.0.0.3', port: 80, check: { type: 'ttl', ttl: '10m' } });
    expected.push(['add', r.body.revision, 'r-ttl']);
    r = await api(cp.http, 'PUT', '/v1/services/res/instances/r-ttl/heartbeat', { status: 'unhealthy', reason: 'paused' });
    expected.push(['update', r.body.instance.revision, 'r-ttl']);
    r = await api(cp.http, 'DELETE', '/v1/services/res/instances/r-2');
    expected.push(['remove', r.body.revision, 'r-2']);
    r = await api(cp.http, 'PUT', '/v1/services/res', { labels: { resumed: 'yes' } });
    expected.push(['service', r.body.revision, 'res']);
    assert.deepEqual(expected.map((e) => e[1]), [1, 2, 3, 4, 5, 6].map((d) => last + d), 'the changes are revisions last+1 .. last+6');
    const resumesBefore = metricSample(await metrics(cp), 'skein_watch_resumes_total') ?? 0;

    const w2 = await watch(cp, `/v1/watch?since=${last}`);
    assert.equal(w2.status, 200);
    const missed = await w2.waitForCount(expected.length);
    assert.deepEqual(missed.map(summary), expected, 'exactly the missed changes, in order, no snapshot');
    assert.equal(missed[1]?.instance.weight, 3);
    assert.equal(missed[3]?.instance.status, 'unhealthy');
    assert.equal(missed[3]?.instance.reason, 'paused');
    assert.deepEqual(missed[5]?.definition.labels, { resumed: 'yes' });
    assert.equal(metricSample(await metrics(cp), 'skein_watch_resumes_total'), resumesBefore + 1);

    // Then live changes follow, each once.
    const live = await api(cp.http, 'PUT', '/v1/services/res/instances/r-3', { address: '10.0.0.4', port: 80 });
    const live2 = await api(cp.http, 'PUT', '/v1/services/res/instances/r-ttl/heartbeat', {});
    const msgs = await w2.waitForCount(expected.length + 2);
    assert.deepEqual(msgs.slice(expected.length).map(summary), [
      ['add', live.body.revision, 'r-3'],
      ['update', live2.body.instance.revision, 'r-ttl'],
    ]);
    assert.equal(msgs.length, expected.length + 2, 'nothing repeated');
    assert.ok(!msgs.some((m) => m.type === 'snapshot'));
    assertIncreasing(msgs);

    // Resuming from the current revision: nothing missed, nothing sent until the next change.
    const now = await revision(cp);
    const w3 = await watch(cp, `/v1/watch?since=${now}&service=res`);
    const next = await api(cp.http, 'DELETE', '/v1/services/res/instances/r-3');
    const [only] = await w3.waitForCount(1);
    assert.deepEqual(summary(only as StreamMessage), ['remove', next.body.revision, 'r-3']);
    // A since from the future (a client that talked to another control plane) gets a snapshot.
    const w4 = await watch(cp, `/v1/watch?since=${now + 1000}&service=res`);
    const [s4] = await w4.waitForCount(1);
    assert.equal(s4?.type, 'snapshot');
  });

  test('SSE: id lines, and resuming with Last-Event-ID', async () => {
    const w = await watch(cp, '/v1/watch?service=sse', { accept: 'text/event-stream' });
    assert.equal(w.status, 200);
    assert.match(String(w.headers['content-type']), /^text\/event-stream/);
    await w.waitForCount(1);
    assert.equal(w.events[0]?.event, 'snapshot');
    assert.equal(w.events[0]?.id, String(w.events[0]?.data.revision));
    const a = await api(cp.http, 'PUT', '/v1/services/sse/instances/e-1', { address: '10.0.0.1', port: 80 });
    await w.waitForCount(2);
    assert.deepEqual([w.events[1]?.event, w.events[1]?.id, w.events[1]?.data.instance.id], ['add', String(a.body.revision), 'e-1']);
    const lastId = w.events[1]?.id as string;
    w.close();

    const b = await api(cp.http, 'PUT', '/v1/services/sse/instances/e-2', { address: '10.0.0.2', port: 80 });
    const c = await api(cp.http, 'DELETE', '/v1/services/sse/instances/e-1');
    const w2 = await watch(cp, '/v1/watch?service=sse', { accept: 'text/event-stream', 'last-event-id': lastId });
    await w2.waitForCount(2);
    assert.deepEqual(
      w2.events.map((e) => [e.event, e.id, e.data.instance?.id]),
      [
        ['add', String(b.body.revision), 'e-2'],
        ['remove', String(c.body.revision), 'e-1'],
      ],
    );
    // format=sse works without the Accept header; since= works there too.
    const w3 = await watch(cp, `/v1/watch?service=sse&format=sse&since=${b.body.revision}`);
    assert.match(String(w3.headers['content-type']), /^text\/event-stream/);
    await w3.waitForCount(1);
    assert.deepEqual([w3.events[0]?.event, w3.events[0]?.id], ['remove', String(c.body.revision)]);
    // And format=ndjson overrides an SSE Accept header.
    const w4 = await watch(cp, '/v1/watch?service=sse&format=ndjson', { accept: 'text/event-stream' });
    assert.match(String(w4.headers['content-type']), /^application\/x-ndjson/);
    const [s4] = await w4.waitForCount(1);
    assert.equal(s4?.type, 'snapshot');
  });

  test('long-poll: index + wait blocks until a change, or returns unchanged after wait', async () => {
    await api(cp.http, 'PUT', '/v1/services/lp/instances/lp-1', { address: '10.0.0.1', port: 80 });
    const first = await api(cp.http, 'GET', '/v1/services/lp/instances');
    const index = Number(first.headers.get('x-skein-index'));
    assert.ok(index > 0);

    const t0 = Date.now();
    let returned = false;
    const poll = api(cp.http, 'GET', `/v1/services/lp/instances?index=${index}&wait=10s`).finally(() => (returned = true));
    // A change to another service does not answer it.
    await api(cp.http, 'PUT', '/v1/services/lp-other/instances/x', { address: '10.0.0.9', port: 80 });
    for (let i = 0; i < 5; i++) await api(cp.http, 'GET', '/v1/health');
    assert.equal(returned, false, 'the blocking query waits for a change');
    const change = await api(cp.http, 'PUT', '/v1/services/lp/instances/lp-2', { address: '10.0.0.2', port: 80 });
    const r = await poll;
    assert.equal(r.status, 200);
    assert.ok(Date.now() - t0 < 9000, 'answered by the change, not by the wait running out');
    const index2 = Number(r.headers.get('x-skein-index'));
    assert.equal(index2, change.body.revision);
    assert.ok(index2 > index);
    assert.deepEqual(r.body.instances.map((i: any) => i.id), ['lp-1', 'lp-2']);

    // Nothing changes: it returns after wait, with the same index.
    const t1 = Date.now();
    const idle = await api(cp.http, 'GET', `/v1/services/lp/instances?index=${index2}&wait=1s`);
    assert.equal(idle.status, 200);
    assert.ok(Date.now() - t1 >= 900, 'it waited');
    assert.equal(Number(idle.headers.get('x-skein-index')), index2);
    assert.deepEqual(idle.body.instances.map((i: any) => i.id), ['lp-1', 'lp-2']);

    // With index, a service that does not exist yet is waited for.
    let appeared = false;
    const appear = api(cp.http, 'GET', '/v1/services/lp-new/instances?index=0&wait=10s').finally(() => (appeared = true));
    for (let i = 0; i < 5; i++) await api(cp.http, 'GET', '/v1/health');
    assert.equal(appeared, false, 'an unknown service is waited for');
    const created = await api(cp.http, 'PUT', '/v1/services/lp-new/instances/n-1', { address: '10.0.0.3', port: 80 });
    const ar = await appear;
    assert.equal(ar.status, 200, JSON.stringify(ar.body));
    assert.deepEqual(ar.body.instances.map((i: any) => i.id), ['n-1']);
    assert.equal(Number(ar.headers.get('x-skein-index')), created.body.revision);
    // Without index it is a 404 at once.
    assert.equal((await api(cp.http, 'GET', '/v1/services/lp-none/instances')).status, 404);

    // An index below the current one answers at once; the global listing long-polls too.
    const stale = await api(cp.http, 'GET', `/v1/services/lp/instances?index=${index}&wait=10m`);
    assert.equal(Number(stale.headers.get('x-skein-index')), index2);
    const g = await api(cp.http, 'GET', '/v1/services');
    const gIndex = Number(g.headers.get('x-skein-index'));
    const gPoll = api(cp.http, 'GET', `/v1/services?index=${gIndex}&wait=5s`);
    const any = await api(cp.http, 'PUT', '/v1/services/lp-other/instances/y', { address: '10.0.0.9', port: 80 });
    const gr = await gPoll;
    assert.equal(Number(gr.headers.get('x-skein-index')), any.body.revision);
    assert.equal(gr.body.revision, any.body.revision);
  });
});

describe('watch history and restarts', () => {
  test('since older than the history gets a fresh snapshot; after a restart, since gets a snapshot', async () => {
    const d = await tempDir('skein-watch-hist-');
    cleanups.push(d.remove);
    const cp = await control(['--history', '5'], d.path);
    for (let i = 0; i < 10; i++) assert.equal((await api(cp.http, 'PUT', `/v1/services/h/instances/h-${i}`, { address: '10.0.0.1', port: 80 + i })).status, 201);
    for (let i = 0; i < 10; i++) assert.equal((await api(cp.http, 'PUT', `/v1/services/h/instances/h-${i}`, { address: '10.0.0.1', port: 80 + i, weight: 2 })).status, 200);
    const rev = await revision(cp);
    assert.equal(rev, 20);

    const old = await watch(cp, '/v1/watch?since=1');
    const [snap] = await old.waitForCount(1);
    assert.equal(snap?.type, 'snapshot');
    assert.equal(snap?.revision, rev);
    assert.equal(snap?.instances.length, 10);
    assert.ok(snap?.instances.every((i: any) => i.weight === 2));

    // Within the history: the missed changes; just past it: a snapshot.
    const in5 = await watch(cp, `/v1/watch?since=${rev - 5}`);
    const got = await in5.waitForCount(5);
    assert.deepEqual(got.map((m) => [m.type, m.revision]), [16, 17, 18, 19, 20].map((r) => ['update', r]));
    const out6 = await watch(cp, `/v1/watch?since=${rev - 6}`);
    const [s6] = await out6.waitForCount(1);
    assert.equal(s6?.type, 'snapshot');
    const sse = await watch(cp, '/v1/watch?format=sse', { 'last-event-id': '3' });
    await sse.waitForCount(1);
    assert.equal(sse.events[0]?.event, 'snapshot');

    // Restart on the same data dir: a since from before the restart always gets a snapshot.
    await cp.stop();
    const cp2 = await control(['--history', '5'], d.path);
    assert.equal(await revision(cp2), rev);
    const after = await watch(cp2, `/v1/watch?since=${rev}`);
    const [s] = await after.waitForCount(1);
    assert.equal(s?.type, 'snapshot');
    assert.equal(s?.revision, rev);
    assert.equal(s?.instances.length, 10);
    // And diffs follow it.
    const r = await api(cp2.http, 'DELETE', '/v1/services/h/instances/h-0');
    const msgs = await after.waitForCount(2);
    assert.deepEqual(summary(msgs[1] as StreamMessage), ['remove', rev + 1, 'h-0']);
    assert.equal(r.body.revision, rev + 1);
    // Changes made since this start can be resumed again.
    const w = await watch(cp2, `/v1/watch?since=${rev + 1}`);
    await api(cp2.http, 'DELETE', '/v1/services/h/instances/h-1');
    const [m] = await w.waitForCount(1);
    assert.deepEqual(summary(m as StreamMessage), ['remove', rev + 2, 'h-1']);
  });
});

describe('slow subscribers', () => {
  test('a subscriber that stops reading is closed and counted; others get everything', async (t) => {
    const cp = await control(['--max-queue', '10']);
    const normal = await watch(cp, '/v1/watch');
    await normal.waitForCount(1);

    // A raw socket that sends the request and never reads.
    const sock = connect({ host: '127.0.0.1', port: cp.httpPort });
    cleanups.push(() => sock.destroy());
    let closed = false;
    sock.on('close', () => (closed = true));
    sock.on('error', () => {});
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    sock.pause();
    sock.write(`GET /v1/watch HTTP/1.1\r\nHost: 127.0.0.1:${cp.httpPort}\r\n\r\n`);
    await waitFor(async () => (await api(cp.http, 'GET', '/v1/health')).body.watchSubscribers === 2, { what: 'two subscribers' });
    assert.equal(metricSample(await metrics(cp), 'skein_watch_overflows_total'), 0);

    // Large changes until the server gives up on the slow one (kernel buffers hold a few MB).
    const labels: Record<string, string> = {};
    for (let i = 0; i < 64; i++) labels[`label-${i}`] = 'v'.repeat(240);
    let made = 0;
    for (let batch = 0; batch < 30; batch++) {
      const ids = Array.from({ length: 100 }, (_, i) => `big-${batch * 100 + i}`);
      await mapLimit(ids, 50, async (id) => {
        const r = await api(cp.http, 'PUT', `/v1/services/big/instances/${id}`, { address: '10.0.0.1', port: 80, labels });
        assert.equal(r.status, 201);
      });
      made += ids.length;
      if ((metricSample(await metrics(cp), 'skein_watch_overflows_total') ?? 0) >= 1) break;
    }
    assert.ok((metricSample(await metrics(cp), 'skein_watch_overflows_total') ?? 0) >= 1, `overflow after ${made} large changes`);
    assert.equal((await api(cp.http, 'GET', '/v1/health')).body.watchSubscribers, 1, 'the slow stream is gone');
    t.diagnostic(`the slow stream overflowed after ${made} large changes`);

    // The slow socket sees its stream end once it reads again.
    sock.resume();
    await waitFor(() => closed, { timeoutMs: 15_000, what: 'the slow stream to be closed by the server' });

    // The normal subscriber got every change, once, in order.
    const msgs = await normal.waitForCount(1 + made, 30_000);
    const adds = msgs.slice(1);
    assert.equal(adds.length, made);
    assert.ok(adds.every((m) => m.type === 'add'));
    assert.equal(new Set(adds.map((m) => m.instance.id)).size, made);
    assertIncreasing(msgs);
    assert.equal(normal.ended, false);
    // It stays subscribed and keeps receiving.
    await api(cp.http, 'DELETE', '/v1/services/big/instances/big-0');
    const [last] = (await normal.waitForCount(2 + made)).slice(-1);
    assert.deepEqual([last?.type, last?.instance.id], ['remove', 'big-0']);
  });
});
