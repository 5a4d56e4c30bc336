import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { ManualClock } from '../core/clock.js';
import { parseInstance, parseService } from '../api/parse.js';
import type { Instance } from '../api/types.js';
import { WATCH_DEFAULTS } from '../api/wire.js';
import { MemoryStore } from './store/store.js';
import { Registry } from './registry/registry.js';
import { Publisher, type PublisherOptions, type Sink, type WatchFormat, type WatchMessage } from './publisher.js';

/** An in-memory stand-in for an HTTP response: the boundary the publisher writes to. */
class TestSink extends EventEmitter implements Sink {
  readonly chunks: string[] = [];
  /** What write() returns: false means "buffer full, wait for drain". */
  accept = true;
  destroyed = false;
  ended = false;

  write(chunk: string): boolean {
    assert.ok(!this.destroyed, 'write after destroy');
    this.chunks.push(chunk);
    return this.accept;
  }

  end(): void {
    this.ended = true;
    this.emit('close');
  }

  destroy(): void {
    this.destroyed = true;
    this.emit('close');
  }

  /** The chunks as ndjson messages. */
  messages(): WatchMessage[] {
    return this.chunks.map((c) => {
      assert.ok(c.endsWith('\n'));
      return JSON.parse(c) as WatchMessage;
    });
  }

  /** Messages other than pings, as [type, revision, service]. */
  summary(): Array<[string, number, string | null]> {
    return this.messages()
      .filter((m): m is Exclude<WatchMessage, { type: 'ping' }> => m.type !== 'ping')
      .map((m) => [m.type, m.revision, m.service]);
  }
}

function inst(id: string, service = 'web', extra: Record<string, unknown> = {}): Instance {
  return parseInstance({ id, service, address: '10.0.0.1', port: 8080, ...extra });
}

async function setup(opts: Partial<PublisherOptions> = {}, store = new MemoryStore()) {
  const clock = new ManualClock();
  const registry = await Registry.open({ clock, store });
  const publisher = new Publisher({ registry, clock, pingIntervalMs: 0, ...opts });
  return { clock, registry, publisher, store };
}

function subscribe(publisher: Publisher, service: string | null, since: number | null = null, format: WatchFormat = 'ndjson'): TestSink {
  const sink = new TestSink();
  publisher.subscribe({ service, since, format, sink });
  return sink;
}

/** Lets promise callbacks run (no timers involved). */
const flush = () => new Promise<void>((r) => setImmediate(r));

test('a subscriber first gets a snapshot of its service', async (t) => {
  const { registry, publisher } = await setup();
  t.after(() => publisher.close());
  await registry.putService(parseService({ name: 'web', labels: { team: 'a' } }));
  await registry.register(inst('w2'));
  await registry.register(inst('w1', 'web', { check: { type: 'http' } })); // unhealthy: still in the snapshot
  await registry.register(inst('a1', 'api'));

  const sink = subscribe(publisher, 'web');
  const [snap, ...rest] = sink.messages();
  assert.equal(rest.length, 0);
  assert.ok(snap?.type === 'snapshot');
  assert.equal(snap.revision, 4);
  assert.equal(snap.service, 'web');
  assert.deepEqual(snap.instances.map((i) => [i.id, i.status]), [['w1', 'unhealthy'], ['w2', 'healthy']]);
  assert.deepEqual(snap.services.map((s) => s.name), ['web']);
  assert.deepEqual(snap.services[0]?.definition?.labels, { team: 'a' });
  const w1 = snap.instances[0];
  assert.deepEqual(
    { address: w1?.address, port: w1?.port, weight: w1?.weight, check: w1?.check, revision: w1?.revision, service: w1?.service },
    { address: '10.0.0.1', port: 8080, weight: 1, check: 'http', revision: 3, service: 'web' },
  );
  assert.equal(w1?.since, new Date(1_700_000_000_000).toISOString());
  assert.equal(publisher.snapshotsSent, 1);
});

test('a subscriber to everything gets a snapshot of all services', async (t) => {
  const { registry, publisher } = await setup();
  t.after(() => publisher.close());
  await registry.putService(parseService({ name: 'web' }));
  await registry.register(inst('w1'));
  await registry.register(inst('a1', 'api'));
  const [snap] = subscribe(publisher, null).messages();
  assert.ok(snap?.type === 'snapshot');
  assert.equal(snap.service, null);
  assert.equal(snap.revision, 3);
  assert.deepEqual(snap.instances.map((i) => `${i.service}/${i.id}`).sort(), ['api/a1', 'web/w1']);
  assert.deepEqual(snap.services.map((s) => [s.name, s.definition?.name ?? null]), [['api', null], ['web', 'web']]);

  const [unknown] = subscribe(publisher, 'nope').messages();
  assert.ok(unknown?.type === 'snapshot');
  assert.deepEqual([unknown.instances, unknown.services], [[], []], 'an unknown service has an empty snapshot');
});

test('after the snapshot come diffs, in revision order, filtered by service', async (t) => {
  const { registry, publisher } = await setup();
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  const web = subscribe(publisher, 'web');
  const all = subscribe(publisher, null);
  const api = subscribe(publisher, 'api'); // not known yet
  await registry.register(inst('a1', 'api'));
  await registry.register(inst('w2', 'web', { check: { type: 'tcp' } }));
  await registry.setStatus('web', 'w2', 'healthy', 'TCP ok');
  await registry.putService(parseService({ name: 'api' }));
  await registry.deregister('web', 'w1');

  assert.deepEqual(web.summary(), [
    ['snapshot', 1, 'web'],
    ['add', 3, 'web'],
    ['update', 4, 'web'],
    ['remove', 6, 'web'],
  ]);
  assert.deepEqual(api.summary(), [
    ['snapshot', 1, 'api'],
    ['add', 2, 'api'],
    ['service', 5, 'api'],
  ]);
  assert.deepEqual(all.summary(), [
    ['snapshot', 1, null],
    ['add', 2, 'api'],
    ['add', 3, 'web'],
    ['update', 4, 'web'],
    ['service', 5, 'api'],
    ['remove', 6, 'web'],
  ]);
  const update = web.messages()[2];
  assert.ok(update?.type === 'update');
  assert.equal(update.instance.status, 'healthy');
  assert.equal(update.instance.reason, 'TCP ok');
  const removed = web.messages()[3];
  assert.ok(removed?.type === 'remove');
  assert.equal(removed.instance.id, 'w1');
  assert.equal(publisher.subscriberCount, 3);
});

test('since=REV resumes with exactly the missed events: no snapshot, no duplicates', async (t) => {
  const { registry, publisher } = await setup();
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  await registry.register(inst('a1', 'api'));
  const first = subscribe(publisher, null);
  await registry.register(inst('w2'));
  const seen = first.messages().at(-1)?.revision;
  assert.equal(seen, 3);
  first.end(); // the client goes away
  assert.equal(publisher.subscriberCount, 0);

  await registry.register(inst('a2', 'api'));
  await registry.deregister('web', 'w1');
  await registry.register(inst('w3'));

  const resumed = subscribe(publisher, null, seen);
  assert.deepEqual(resumed.summary(), [
    ['add', 4, 'api'],
    ['remove', 5, 'web'],
    ['add', 6, 'web'],
  ]);
  const webOnly = subscribe(publisher, 'web', seen);
  assert.deepEqual(webOnly.summary(), [
    ['remove', 5, 'web'],
    ['add', 6, 'web'],
  ]);
  const upToDate = subscribe(publisher, null, 6);
  assert.equal(upToDate.chunks.length, 0, 'nothing missed, nothing sent');
  assert.equal(publisher.resumes, 3);
  assert.equal(publisher.snapshotsSent, 1);

  // the resumed streams continue live, once each
  await registry.register(inst('w4'));
  assert.deepEqual(resumed.summary().at(-1), ['add', 7, 'web']);
  assert.deepEqual(webOnly.summary().at(-1), ['add', 7, 'web']);
  assert.deepEqual(upToDate.summary(), [['add', 7, 'web']]);
  assert.equal(resumed.chunks.length, 4);
});

test('since older than the history gets a fresh snapshot', async (t) => {
  const { registry, publisher } = await setup({ historySize: 5 });
  t.after(() => publisher.close());
  for (let i = 1; i <= 10; i++) await registry.register(inst(`w${i}`));
  // the history holds revisions 6..10
  const edge = subscribe(publisher, null, 5);
  assert.deepEqual(edge.summary().map(([type, rev]) => [type, rev]), [['add', 6], ['add', 7], ['add', 8], ['add', 9], ['add', 10]]);
  const old = subscribe(publisher, null, 4);
  const [snap, ...rest] = old.messages();
  assert.ok(snap?.type === 'snapshot');
  assert.equal(snap.revision, 10);
  assert.equal(snap.instances.length, 10);
  assert.equal(rest.length, 0);
  const zero = subscribe(publisher, 'web', 0);
  assert.equal(zero.messages()[0]?.type, 'snapshot');
  assert.equal(publisher.snapshotsSent, 2);
  assert.equal(publisher.resumes, 1);
});

test('since ahead of the current revision gets a snapshot', async (t) => {
  const { registry, publisher } = await setup();
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  const [snap, ...rest] = subscribe(publisher, 'web', 99).messages();
  assert.ok(snap?.type === 'snapshot');
  assert.equal(snap.revision, 1);
  assert.equal(rest.length, 0);
});

test('after a restart, since=an old revision gets a snapshot', async (t) => {
  const store = new MemoryStore();
  const before = await setup({}, store);
  await before.registry.register(inst('w1'));
  await before.registry.register(inst('w2'));
  before.publisher.close();
  const old = before.registry.revision;

  const after = await setup({}, store);
  t.after(() => after.publisher.close());
  assert.equal(after.registry.startRevision, old);
  for (const since of [old - 1, old]) {
    const [snap, ...rest] = subscribe(after.publisher, 'web', since).messages();
    assert.ok(snap?.type === 'snapshot', `since=${since}`);
    assert.equal(snap.revision, old);
    assert.deepEqual(snap.instances.map((i) => i.id), ['w1', 'w2']);
    assert.equal(rest.length, 0);
  }
  // changes after the restart are resumable again
  await after.registry.register(inst('w3'));
  await after.registry.register(inst('w4'));
  const resumed = subscribe(after.publisher, 'web', old + 1);
  assert.deepEqual(resumed.summary(), [['add', old + 2, 'web']]);
});

test('a subscriber that stops reading is closed after maxQueue messages; others keep receiving', async (t) => {
  const { registry, publisher } = await setup({ maxQueue: 3 });
  t.after(() => publisher.close());
  const slow = subscribe(publisher, 'web');
  slow.accept = false; // the snapshot was accepted; from now on the buffer is full
  const fast = subscribe(publisher, 'web');
  const other = subscribe(publisher, null);
  assert.equal(publisher.subscriberCount, 3);

  await registry.register(inst('w1')); // written, returns false: blocked from here on
  for (let i = 2; i <= 4; i++) await registry.register(inst(`w${i}`)); // queued: 3
  assert.equal(slow.destroyed, false);
  assert.equal(publisher.overflows, 0);
  assert.equal(slow.chunks.length, 2, 'snapshot and w1 written; the rest waits in the queue');

  await registry.register(inst('w5')); // one more than the queue holds
  assert.equal(slow.destroyed, true);
  assert.equal(publisher.overflows, 1);
  assert.equal(publisher.subscriberCount, 2);

  await registry.register(inst('w6'));
  await registry.register(inst('w7'));
  assert.equal(slow.chunks.length, 2, 'nothing is written to a closed subscriber');
  slow.emit('drain'); // a late drain writes nothing either
  assert.equal(slow.chunks.length, 2);
  assert.equal(publisher.overflows, 1, 'counted once');
  assert.deepEqual(fast.summary().map(([, rev]) => rev), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(other.messages().length, 8);
  assert.equal(fast.destroyed || other.destroyed, false);
});

test('a subscriber that overflows while catching up on history is closed and not kept', async (t) => {
  const { registry, publisher, clock } = await setup({ maxQueue: 3, pingIntervalMs: 1000 });
  t.after(() => publisher.close());
  for (let i = 1; i <= 10; i++) await registry.register(inst(`w${i}`));
  const sink = new TestSink();
  sink.accept = false; // e.g. an HTTP response whose buffer fills with the first message
  publisher.subscribe({ service: null, since: 1, format: 'ndjson', sink });
  assert.equal(sink.destroyed, true);
  assert.equal(publisher.overflows, 1);
  assert.equal(publisher.subscriberCount, 0, 'the closed subscription is not registered');
  const written = sink.chunks.length;
  await registry.register(inst('w11'));
  clock.advance(1000);
  assert.equal(sink.chunks.length, written);
});

test('a subscriber that drains gets its queued messages in order', async (t) => {
  const { registry, publisher } = await setup({ maxQueue: 10 });
  t.after(() => publisher.close());
  const sink = subscribe(publisher, 'web');
  sink.accept = false;
  for (let i = 1; i <= 5; i++) await registry.register(inst(`w${i}`));
  assert.equal(sink.chunks.length, 2);

  // the first drain writes one message, then the buffer is full again
  sink.emit('drain');
  assert.equal(sink.chunks.length, 3);
  sink.accept = true;
  sink.emit('drain');
  assert.equal(sink.chunks.length, 6);
  await registry.register(inst('w6'));
  assert.deepEqual(sink.summary().map(([type, rev]) => [type, rev]), [['snapshot', 0], ['add', 1], ['add', 2], ['add', 3], ['add', 4], ['add', 5], ['add', 6]]);
  assert.equal(sink.destroyed, false);
  assert.equal(publisher.overflows, 0);
});

test('ndjson and SSE encodings carry the same message; SSE has id: REV', async (t) => {
  const { registry, publisher } = await setup();
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  const nd = subscribe(publisher, 'web', null, 'ndjson');
  const sse = subscribe(publisher, 'web', null, 'sse');
  await registry.register(inst('w2'));
  assert.equal(nd.chunks.length, 2);
  assert.equal(sse.chunks.length, 2);
  nd.chunks.forEach((line, i) => {
    assert.match(line, /^\{.*\}\n$/);
    const m = JSON.parse(line) as WatchMessage;
    const frame = sse.chunks[i] as string;
    const parsed = /^id: (\d+)\nevent: (\w+)\ndata: (.*)\n\n$/.exec(frame);
    assert.ok(parsed !== null, frame);
    assert.equal(Number(parsed[1]), m.revision);
    assert.equal(parsed[2], m.type);
    assert.deepEqual(JSON.parse(parsed[3] as string), m);
  });
  assert.match(sse.chunks[0] as string, /^id: 1\nevent: snapshot\n/);
  assert.match(sse.chunks[1] as string, /^id: 2\nevent: add\n/);
  // resumed history is encoded in the subscriber's format too
  const resumed = subscribe(publisher, 'web', 1, 'sse');
  assert.equal(resumed.chunks[0], sse.chunks[1]);
  const resumedNd = subscribe(publisher, 'web', 1, 'ndjson');
  assert.equal(resumedNd.chunks[0], nd.chunks[1]);
});

test('waitForChange resolves on a change to its service, not another one', async (t) => {
  const { registry, publisher, clock } = await setup();
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  await registry.register(inst('a1', 'api'));
  let done = false;
  const p = publisher.waitForChange('web', registry.serviceRevision('web'), 60_000, clock).then(() => {
    done = true;
  });
  await flush();
  assert.equal(done, false);
  await registry.register(inst('a2', 'api'));
  await flush();
  assert.equal(done, false, "another service's change does not wake it");
  await registry.register(inst('w2'));
  await p;
  assert.equal(done, true);
  assert.equal(clock.pending, 0, 'its timer is cancelled');

  // null waits for any change
  let any = false;
  const q = publisher.waitForChange(null, registry.revision, 60_000, clock).then(() => {
    any = true;
  });
  await flush();
  assert.equal(any, false);
  await registry.register(inst('a3', 'api'));
  await q;
  assert.equal(any, true);
});

test('waitForChange returns at once when already changed or the index is from the future', async (t) => {
  const { registry, publisher, clock } = await setup();
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  await registry.register(inst('w2'));
  await publisher.waitForChange('web', 1, 60_000, clock); // web is at 2
  await publisher.waitForChange('web', 50, 60_000, clock); // the registry is at 2
  await publisher.waitForChange(null, 0, 60_000, clock);
  assert.equal(clock.pending, 0);
});

test('waitForChange resolves on timeout when nothing changes', async (t) => {
  const { registry, publisher, clock } = await setup();
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  let done = false;
  const p = publisher.waitForChange('web', registry.serviceRevision('web'), 5000, clock).then(() => {
    done = true;
  });
  clock.advance(4999);
  await flush();
  assert.equal(done, false);
  clock.advance(1);
  await p;
  assert.equal(done, true);
  // a later change finds no stale waiter
  await registry.register(inst('w2'));
});

test('close() releases waiters and stops subscriptions', async () => {
  const { registry, publisher, clock } = await setup({ pingIntervalMs: 1000 });
  const sink = subscribe(publisher, 'web');
  const waiting = publisher.waitForChange('web', 0, 60_000, clock);
  publisher.close();
  await waiting;
  await registry.register(inst('w1'));
  clock.advance(5000);
  assert.equal(sink.chunks.length, 1, 'only the snapshot');
});

test('keep-alive pings on the clock, in each format', async (t) => {
  const { registry, publisher, clock } = await setup({ pingIntervalMs: 1000 });
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  const nd = subscribe(publisher, 'web', null, 'ndjson');
  const sse = subscribe(publisher, null, null, 'sse');
  clock.advance(999);
  assert.equal(nd.chunks.length, 1);
  clock.advance(1);
  assert.deepEqual(nd.chunks.slice(1), ['{"type":"ping","revision":1}\n']);
  assert.deepEqual(sse.chunks.slice(1), [': ping\n\n']);
  await registry.register(inst('w2'));
  clock.advance(1000);
  assert.equal(nd.chunks.at(-1), '{"type":"ping","revision":2}\n');
  assert.equal(nd.chunks.length, 4);
  assert.equal(sse.chunks.length, 4);

  const off = await setup({ pingIntervalMs: 0 });
  const quiet = subscribe(off.publisher, null);
  off.clock.advance(60_000);
  assert.equal(quiet.chunks.length, 1);
  assert.equal(off.clock.pending, 0);
  off.publisher.close();
});

test('subscribers at one revision share one built snapshot per format and service; a change builds a fresh one', async (t) => {
  const { registry, publisher } = await setup();
  t.after(() => publisher.close());
  await registry.register(inst('w1'));
  const herd = Array.from({ length: 5 }, () => subscribe(publisher, null));
  subscribe(publisher, null, null, 'sse');
  subscribe(publisher, 'web');
  assert.equal(publisher.snapshotsSent, 7);
  assert.equal(publisher.snapshotsBuilt, 3, 'everything as NDJSON, everything as SSE, web as NDJSON');
  const texts = herd.map((s) => JSON.stringify(s.messages()[0]));
  assert.equal(new Set(texts).size, 1);
  await registry.register(inst('w2'));
  const late = subscribe(publisher, null);
  assert.equal(publisher.snapshotsBuilt, 4);
  const snap = late.messages()[0];
  assert.ok(snap?.type === 'snapshot');
  assert.deepEqual(snap.instances.map((i) => i.id).sort(), ['w1', 'w2'], 'not the stale cached one');
});

test('without pingIntervalMs, subscribers are pinged every WATCH_DEFAULTS.pingIntervalMs', async (t) => {
  const { publisher, clock } = await setup({ pingIntervalMs: undefined });
  t.after(() => publisher.close());
  const nd = subscribe(publisher, null);
  clock.advance(WATCH_DEFAULTS.pingIntervalMs - 1);
  assert.equal(nd.chunks.length, 1, 'only the snapshot');
  clock.advance(1);
  assert.equal(nd.chunks.length, 2);
  assert.match(nd.chunks[1] ?? '', /^\{"type":"ping"/);
});
