import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { WATCH_DEFAULTS } from '../api/wire.js';
import { ManualClock, systemClock } from '../core/clock.js';
import { Backoff } from '../core/backoff.js';
import { SkeinError } from '../core/errors.js';
import { EndpointSet } from './endpoint.js';
import { ControlReplicas } from './control-replicas.js';
import {
  LineSplitter,
  WatchClient,
  WatchState,
  WatchStreamError,
  parseWatchMessage,
  type WatchLogger,
  type WatchMessage,
  type WatchTransport,
  type WatchTransportHandlers,
  type WireInstance,
} from './watch-client.js';

// A pino logger is a WatchLogger (fails to compile otherwise).
const _fitsLogger: WatchLogger = pino({ enabled: false });
void _fitsLogger;

function inst(service: string, id: string, over: Partial<WireInstance> = {}): WireInstance {
  return {
    id,
    service,
    address: '10.0.0.1',
    port: 8080,
    weight: 1,
    zone: '',
    version: '',
    labels: {},
    status: 'healthy',
    reason: '',
    since: '2026-01-01T00:00:00.000Z',
    revision: 1,
    check: null,
    ...over,
  };
}

function snapshot(revision: number, instances: WireInstance[], service: string | null = null, defined: string[] = []): WatchMessage {
  const names = service === null ? [...new Set([...instances.map((i) => i.service), ...defined])] : [service];
  const definition = (name: string) => (defined.includes(name) ? ({ name, ports: [], labels: {}, defaults: {} } as never) : null);
  return { type: 'snapshot', revision, service, instances, services: names.map((name) => ({ name, definition: definition(name) })) };
}

const diff = (type: 'add' | 'update' | 'remove', revision: number, i: WireInstance): WatchMessage => ({ type, revision, service: i.service, instance: i });
const keys = (s: EndpointSet) => s.list().map((e) => e.key);

describe('LineSplitter', () => {
  test('lines split across chunks, several lines in one chunk, \\r\\n and empty lines', () => {
    const s = new LineSplitter();
    assert.deepEqual(s.push('{"a"'), []);
    assert.equal(s.buffered, 4);
    assert.deepEqual(s.push(':1}'), []);
    assert.deepEqual(s.push('\n{"b":2}\n\n{"c"'), ['{"a":1}', '{"b":2}']);
    assert.deepEqual(s.push(':3}\r\n'), ['{"c":3}']);
    assert.equal(s.buffered, 0);
    assert.deepEqual(s.push('\n\n\r\n'), []);
    // One character at a time.
    const out: string[] = [];
    for (const ch of 'x\nyz\n') out.push(...s.push(ch));
    assert.deepEqual(out, ['x', 'yz']);
  });

  test('a partial line longer than the limit is malformed (no unbounded buffering)', () => {
    const s = new LineSplitter(10);
    assert.deepEqual(s.push('0123456789\n'), ['0123456789']);
    s.push('01234');
    assert.throws(() => s.push('567890'), (e: unknown) => e instanceof WatchStreamError && e.kind === 'malformed');
    assert.equal(s.buffered, 0);
  });
});

describe('parseWatchMessage', () => {
  test('accepts every message type; unknown types are skipped (null)', () => {
    const msgs: WatchMessage[] = [
      snapshot(3, [inst('web', 'a')]),
      { type: 'snapshot', revision: 0, service: 'web', instances: [], services: [] },
      diff('add', 4, inst('web', 'b')),
      diff('update', 5, inst('web', 'b', { status: 'unhealthy' })),
      diff('remove', 6, inst('web', 'b')),
      { type: 'service', revision: 7, service: 'web', definition: null },
      { type: 'ping', revision: 7 },
    ];
    for (const m of msgs) assert.deepEqual(parseWatchMessage(JSON.stringify(m)), m);
    assert.equal(parseWatchMessage('{"type":"future-thing","revision":9,"x":1}'), null);
  });

  test('refuses what does not fit, with kind malformed', () => {
    const bad = [
      'not json',
      '[]',
      'null',
      '{"revision":1}',
      '{"type":"ping"}',
      '{"type":"ping","revision":-1}',
      '{"type":"ping","revision":1.5}',
      '{"type":"snapshot","revision":1,"service":null,"instances":{},"services":[]}',
      '{"type":"snapshot","revision":1,"service":null,"instances":[],"services":[{"name":1}]}',
      '{"type":"snapshot","revision":1,"service":5,"instances":[],"services":[]}',
      JSON.stringify({ type: 'snapshot', revision: 1, service: null, instances: [{ ...inst('web', 'a'), port: '80' }], services: [] }),
      JSON.stringify({ type: 'add', revision: 1, service: 'web' }),
      JSON.stringify({ type: 'add', revision: 1, instance: inst('web', 'a') }),
      JSON.stringify({ type: 'update', revision: 1, service: 'web', instance: { ...inst('web', 'a'), id: 7 } }),
      JSON.stringify({ type: 'remove', revision: 1, service: 'web', instance: { ...inst('web', 'a'), status: null } }),
      JSON.stringify({ type: 'service', revision: 1, service: 'web', definition: 'x' }),
    ];
    for (const line of bad) {
      assert.throws(() => parseWatchMessage(line), (e: unknown) => e instanceof WatchStreamError && e.kind === 'malformed', line);
    }
  });
});

describe('WatchState', () => {
  test('a snapshot gives each service the set of its healthy instances', () => {
    const s = new WatchState();
    assert.equal(s.revision, null);
    assert.equal(s.endpoints('web'), EndpointSet.empty());
    const a = s.apply(snapshot(10, [inst('web', 'b'), inst('web', 'a'), inst('web', 'c', { status: 'unhealthy' }), inst('api', 'x', { port: 9000, zone: 'z1', labels: { v: '2' } })], null, ['defined-only']));
    assert.equal(a.kind, 'snapshot');
    assert.equal(s.revision, 10);
    assert.deepEqual(keys(s.endpoints('web')), ['web/a', 'web/b']);
    const x = s.endpoints('api').get('api/x');
    assert.equal(x?.port, 9000);
    assert.equal(x?.zone, 'z1');
    assert.deepEqual(x?.labels, { v: '2' });
    assert.deepEqual(s.services(), ['api', 'defined-only', 'web']);
    assert.deepEqual(a.sets.map(([n, set]) => [n, set.size]).sort(), [['api', 1], ['web', 2]]);
    assert.equal(s.endpoints('nope').size, 0);
  });

  test('add / update / remove; unhealthy leaves the set, healthy again joins it', () => {
    const s = new WatchState();
    s.apply(snapshot(1, [inst('web', 'a')]));
    const v0 = s.endpoints('web');
    let a = s.apply(diff('add', 2, inst('web', 'b')));
    assert.deepEqual(keys(s.endpoints('web')), ['web/a', 'web/b']);
    assert.deepEqual(a.sets.map(([n]) => n), ['web']);
    assert.equal(v0.size, 1, 'sets are immutable snapshots');
    s.apply(diff('update', 3, inst('web', 'b', { status: 'unhealthy' })));
    assert.deepEqual(keys(s.endpoints('web')), ['web/a']);
    assert.deepEqual(s.services(), ['web']);
    s.apply(diff('update', 4, inst('web', 'b', { status: 'healthy', port: 8081 })));
    assert.equal(s.endpoints('web').get('web/b')?.port, 8081);
    // An update that changes nothing an endpoint carries reports no change and keeps the object.
    const before = s.endpoints('web');
    a = s.apply(diff('update', 5, inst('web', 'b', { status: 'healthy', port: 8081, reason: 'still fine' })));
    assert.deepEqual(a.sets, []);
    assert.equal(s.endpoints('web'), before);
    assert.equal(s.revision, 5);
    // An unhealthy instance added does not become an endpoint, but the service knows it.
    a = s.apply(diff('add', 6, inst('db', 'd', { status: 'unhealthy' })));
    assert.deepEqual(a.sets, []);
    assert.deepEqual(s.services(), ['db', 'web']);
    assert.equal(s.endpoints('db').size, 0);
    s.apply(diff('remove', 7, inst('db', 'd', { status: 'unhealthy' })));
    assert.deepEqual(s.services(), ['web']);
    s.apply(diff('remove', 8, inst('web', 'a')));
    assert.deepEqual(keys(s.endpoints('web')), ['web/b']);
    assert.equal(s.revision, 8);
  });

  test('diffs at or below the current revision are stale and ignored', () => {
    const s = new WatchState();
    s.apply(snapshot(10, [inst('web', 'a')]));
    const a = s.apply(diff('remove', 10, inst('web', 'a')));
    assert.equal(a.kind, 'stale');
    assert.equal(s.endpoints('web').size, 1);
    assert.equal(s.apply(diff('add', 3, inst('web', 'z'))).kind, 'stale');
    assert.equal(s.revision, 10);
  });

  test('a new snapshot replaces the state: vanished endpoints and absent services are cleared, unchanged ones not reported', () => {
    const s = new WatchState();
    s.apply(snapshot(5, [inst('web', 'a'), inst('web', 'b'), inst('api', 'x'), inst('gone', 'g')]));
    const api = s.endpoints('api');
    const a = s.apply(snapshot(9, [inst('web', 'a'), inst('web', 'c'), inst('api', 'x')]));
    assert.deepEqual(keys(s.endpoints('web')), ['web/a', 'web/c']);
    assert.equal(s.endpoints('gone').size, 0);
    assert.equal(s.endpoints('api'), api, 'an unchanged service keeps its set object');
    assert.deepEqual(a.sets.map(([n, set]) => [n, keys(set)]).sort(), [['gone', []], ['web', ['web/a', 'web/c']]]);
    assert.deepEqual(s.services(), ['api', 'web']);
    // A snapshot may carry a lower revision (a restarted control plane lost an undurable tail).
    s.apply(snapshot(7, [inst('web', 'a')]));
    assert.equal(s.revision, 7);
    assert.deepEqual(s.services(), ['web']);
    assert.equal(s.apply(diff('add', 8, inst('web', 'n'))).kind, 'add', 'diffs after the lower snapshot apply');
    assert.deepEqual(keys(s.endpoints('web')), ['web/a', 'web/n']);
  });

  test('a one-service snapshot resets only that service (empty when the service is unknown)', () => {
    const s = new WatchState();
    s.apply(snapshot(4, [inst('web', 'a'), inst('api', 'x')]));
    s.apply({ type: 'snapshot', revision: 6, service: 'web', instances: [inst('web', 'b')], services: [{ name: 'web', definition: null }] });
    assert.deepEqual(keys(s.endpoints('web')), ['web/b']);
    assert.deepEqual(keys(s.endpoints('api')), ['api/x'], 'other services untouched');
    s.apply({ type: 'snapshot', revision: 7, service: 'web', instances: [], services: [] });
    assert.equal(s.endpoints('web').size, 0);
    assert.deepEqual(s.services(), ['api']);
  });

  test('pings advance the revision (never backwards) and change nothing else', () => {
    const s = new WatchState();
    assert.deepEqual(s.apply({ type: 'ping', revision: 3 }).sets, []);
    assert.equal(s.revision, 3);
    s.apply(snapshot(10, [inst('web', 'a')]));
    s.apply({ type: 'ping', revision: 8 });
    assert.equal(s.revision, 10);
    s.apply({ type: 'ping', revision: 20 });
    assert.equal(s.revision, 20);
    assert.equal(s.apply(diff('add', 15, inst('web', 'b'))).kind, 'stale');
  });

  test('service definitions are tracked; a defined service without instances is known', () => {
    const s = new WatchState();
    const def = { name: 'web', ports: [], labels: { team: 'a' }, defaults: {} } as never;
    const a = s.apply({ type: 'service', revision: 2, service: 'web', definition: def });
    assert.deepEqual(a.definitions, [['web', def]]);
    assert.equal(s.definition('web'), def);
    assert.deepEqual(s.services(), ['web']);
    s.apply({ type: 'service', revision: 3, service: 'web', definition: null });
    assert.deepEqual(s.services(), []);
    const b = s.apply({ type: 'snapshot', revision: 4, service: null, instances: [], services: [{ name: 'web', definition: def }] });
    assert.deepEqual(b.definitions, [['web', def]]);
    const c = s.apply({ type: 'snapshot', revision: 5, service: null, instances: [], services: [] });
    assert.deepEqual(c.definitions, [['web', null]]);
    assert.equal(s.definition('web'), null);
  });

  test('an instance that is not a valid endpoint is left out and reported; the rest applies', () => {
    const s = new WatchState();
    const a = s.apply(snapshot(1, [inst('web', 'a'), inst('web', 'bad', { port: 0 })]));
    assert.deepEqual(keys(s.endpoints('web')), ['web/a']);
    assert.deepEqual(a.invalid.map((x) => x.key), ['web/bad']);
    assert.ok(a.invalid[0]?.error instanceof SkeinError);
    s.apply(diff('add', 2, inst('web', 'b')));
    const b = s.apply(diff('update', 3, inst('web', 'b', { weight: -1 })));
    assert.deepEqual(keys(s.endpoints('web')), ['web/a'], 'an update to an invalid instance removes its endpoint');
    assert.equal(b.invalid.length, 1);
  });
});

// ---- WatchClient over a scripted transport, with a manual clock ----

class FakeConn {
  closed = false;
  constructor(
    readonly url: URL,
    private readonly h: WatchTransportHandlers,
  ) {}
  close(): void {
    this.closed = true;
  }
  open(status = 200): this {
    this.h.response(status);
    return this;
  }
  send(...msgs: WatchMessage[]): this {
    this.h.data(msgs.map((m) => JSON.stringify(m) + '\n').join(''));
    return this;
  }
  raw(text: string): this {
    this.h.data(text);
    return this;
  }
  end(err: Error | null = null): void {
    this.h.end(err);
  }
}

class FakeTransport {
  conns: FakeConn[] = [];
  readonly transport: WatchTransport = (url, h) => {
    const c = new FakeConn(url, h);
    this.conns.push(c);
    return c;
  };
  get last(): FakeConn {
    const c = this.conns[this.conns.length - 1];
    assert.ok(c, 'a connection was opened');
    return c;
  }
}

const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });

function setup(opts: { service?: string | null; rng?: number; livenessTimeoutMs?: number } = {}) {
  const clock = new ManualClock(0);
  const ft = new FakeTransport();
  const errors: WatchStreamError[] = [];
  const updates: Array<[string, string[]]> = [];
  const client = new WatchClient({
    controlUrl: 'http://control.test:7400/',
    service: opts.service ?? null,
    clock,
    rng: () => opts.rng ?? 0.5,
    transport: ft.transport,
    onError: (e) => errors.push(e),
    ...(opts.livenessTimeoutMs === undefined ? {} : { livenessTimeoutMs: opts.livenessTimeoutMs }),
  });
  client.on('update', (service, set) => updates.push([service, keys(set)]));
  return { clock, ft, client, errors, updates };
}

describe('WatchClient (scripted transport, manual clock)', () => {
  test('subscribes, applies a snapshot that arrives in pieces, then diffs; records contact', () => {
    const { clock, ft, client, updates } = setup();
    assert.equal(client.status, 'idle');
    client.start();
    client.start(); // idempotent
    assert.equal(ft.conns.length, 1);
    assert.equal(ft.last.url.href, 'http://control.test:7400/v1/watch');
    assert.equal(client.connected, false);
    let connectedEvents = 0;
    client.on('connected', () => connectedEvents++);
    ft.last.open();
    assert.equal(client.connected, true);
    assert.equal(connectedEvents, 1);
    const line = JSON.stringify(snapshot(7, [inst('web', 'a'), inst('web', 'b', { status: 'unhealthy' })])) + '\n';
    clock.advance(100);
    ft.last.raw(line.slice(0, 25));
    assert.equal(client.revision, null, 'half a line applies nothing');
    ft.last.raw(line.slice(25) + JSON.stringify(diff('update', 8, inst('web', 'b'))) + '\n{"type":"ping","revision":8}\n');
    assert.equal(client.revision, 8);
    assert.deepEqual(keys(client.endpoints('web')), ['web/a', 'web/b']);
    assert.deepEqual(updates, [['web', ['web/a']], ['web', ['web/a', 'web/b']]]);
    assert.deepEqual(client.services(), ['web']);
    assert.equal(client.lastContact, 100);
    assert.equal(client.stats.snapshots, 1);
    assert.equal(client.stats.messages, 3);
    client.stop();
  });

  test('a one-service client asks for its service; the URL keeps a path prefix', () => {
    const clock = new ManualClock(0);
    const ft = new FakeTransport();
    const c = new WatchClient({ controlUrl: 'http://h:1/skein//', service: 'web', clock, transport: ft.transport });
    c.start();
    assert.equal(ft.last.url.href, 'http://h:1/skein/v1/watch?service=web');
    ft.last.open().send({ type: 'snapshot', revision: 4, service: 'web', instances: [inst('web', 'a')], services: [{ name: 'web', definition: null }] });
    ft.last.end();
    clock.advance(10_000);
    assert.equal(ft.last.url.href, 'http://h:1/skein/v1/watch?service=web&since=4');
    c.stop();
  });

  test('stream lost: keeps the last sets, reconnects after the backoff with since=<revision>', () => {
    const { clock, ft, client, errors } = setup({ rng: 0.5 });
    const disconnected: WatchStreamError[] = [];
    client.on('disconnected', (e) => disconnected.push(e));
    client.start();
    ft.last.open().send(snapshot(7, [inst('web', 'a'), inst('web', 'b')]));
    const set = client.endpoints('web');
    ft.last.end();
    assert.equal(client.connected, false);
    assert.equal(client.status, 'waiting');
    assert.equal(client.endpoints('web'), set, 'serving from the last known state');
    assert.equal(errors.length, 1);
    assert.equal(errors[0]?.kind, 'ended');
    assert.equal(disconnected.length, 1);
    // Backoff was reset by the snapshot: 0.5 * 100 ms.
    clock.advance(49);
    assert.equal(ft.conns.length, 1);
    clock.advance(1);
    assert.equal(ft.conns.length, 2);
    assert.equal(ft.last.url.searchParams.get('since'), '7');
    // Resumed: no snapshot, just the missed diff.
    ft.last.open().send(diff('remove', 8, inst('web', 'b')));
    assert.deepEqual(keys(client.endpoints('web')), ['web/a']);
    assert.equal(client.stats.snapshots, 1);
    client.stop();
  });

  test('backoff grows while attempts fail and resets after a successful message', () => {
    const { clock, ft, client, errors } = setup({ rng: 0.5 });
    client.start();
    const delays: number[] = [];
    for (let i = 0; i < 9; i++) {
      ft.last.end(refused());
      const n = ft.conns.length;
      const t0 = clock.now();
      while (ft.conns.length === n) clock.advance(1);
      delays.push(clock.now() - t0);
    }
    assert.deepEqual(delays, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    assert.ok(errors.every((e) => e.kind === 'network' && /ECONNREFUSED/.test(e.message)));
    assert.equal(client.stats.connects, 0);
    assert.equal(client.stats.attempts, 10);
    // A 200 alone does not reset the backoff; a message does.
    ft.last.open();
    ft.last.end();
    let n = ft.conns.length;
    clock.advance(4999);
    assert.equal(ft.conns.length, n);
    clock.advance(1);
    ft.last.open().send({ type: 'ping', revision: 1 });
    ft.last.end();
    n = ft.conns.length;
    clock.advance(50);
    assert.equal(ft.conns.length, n + 1, 'after a message the delay is drawn from the base again');
    client.stop();
  });

  test('an HTTP error is reported with its status and code, then retried', () => {
    const { clock, ft, client, errors } = setup();
    client.start();
    ft.last.open(400);
    assert.equal(client.connected, false);
    ft.last.raw('{"code":"SKEIN_E_BAD_QUERY","message":"query parameter \\"service\\" is bad"}');
    ft.last.end();
    assert.equal(errors[0]?.kind, 'http');
    assert.equal(errors[0]?.status, 400);
    assert.match(errors[0]?.message ?? '', /HTTP 400 \(SKEIN_E_BAD_QUERY: query parameter "service" is bad\)/);
    clock.advance(100);
    assert.equal(ft.conns.length, 2);
    client.stop();
  });

  test('a malformed line is counted and loses the stream; lines before it were applied', () => {
    const { clock, ft, client, errors } = setup();
    client.start();
    ft.last.open().raw(JSON.stringify(snapshot(3, [inst('web', 'a')])) + '\n{"type":"add","revision":4\n' + JSON.stringify(diff('add', 5, inst('web', 'z'))) + '\n');
    assert.equal(client.stats.malformed, 1);
    assert.equal(errors[0]?.kind, 'malformed');
    assert.ok(ft.conns[0]?.closed, 'the connection is closed');
    assert.deepEqual(keys(client.endpoints('web')), ['web/a'], 'nothing after the bad line');
    assert.equal(client.revision, 3);
    clock.advance(100);
    assert.equal(ft.last.url.searchParams.get('since'), '3');
    // Unknown message types are skipped, not malformed.
    ft.last.open().raw('{"type":"future","revision":4}\n');
    assert.equal(client.stats.malformed, 1);
    assert.equal(client.connected, true);
    client.stop();
  });

  test('liveness: a stream silent for the timeout is dead; any data (pings, part of a line) keeps it alive', () => {
    const { clock, ft, client, errors } = setup({ livenessTimeoutMs: 45_000 });
    client.start();
    ft.last.open().send(snapshot(1, []));
    for (let i = 0; i < 5; i++) {
      clock.advance(15_000);
      ft.last.send({ type: 'ping', revision: 1 });
    }
    clock.advance(44_000);
    ft.last.raw('{"type":"pi'); // a slow line still shows the connection is alive
    clock.advance(44_000);
    assert.equal(client.connected, true);
    assert.equal(errors.length, 0);
    clock.advance(1_000);
    assert.equal(client.connected, false);
    assert.equal(errors[0]?.kind, 'liveness');
    assert.equal(client.stats.livenessTimeouts, 1);
    assert.ok(ft.conns[0]?.closed);
    client.stop();
  });

  test('liveness by default: WATCH_DEFAULTS.livenessMs, so a stream pinged every WATCH_DEFAULTS.pingIntervalMs lives and one that misses its pings dies', () => {
    const { clock, ft, client, errors } = setup();
    client.start();
    ft.last.open().send(snapshot(1, []));
    for (let i = 0; i < 10; i++) {
      clock.advance(WATCH_DEFAULTS.pingIntervalMs);
      ft.last.send({ type: 'ping', revision: 1 });
    }
    assert.ok(WATCH_DEFAULTS.livenessMs >= 2 * WATCH_DEFAULTS.pingIntervalMs, 'one late or lost ping is not a dead stream');
    clock.advance(WATCH_DEFAULTS.livenessMs - 1);
    assert.equal(client.connected, true);
    clock.advance(1);
    assert.equal(client.connected, false);
    assert.equal(errors[0]?.kind, 'liveness');
    client.stop();
  });

  test('liveness also bounds a connection attempt that never answers', () => {
    const { clock, ft, client, errors } = setup({ livenessTimeoutMs: 1_000 });
    client.start();
    clock.advance(999);
    assert.equal(errors.length, 0);
    clock.advance(1);
    assert.equal(errors[0]?.kind, 'liveness');
    assert.ok(ft.last.closed, 'the hanging attempt is abandoned');
    assert.equal(client.status, 'waiting');
    client.stop();
  });

  test('a reconnect that gets a snapshot replaces the state', () => {
    const { clock, ft, client, updates } = setup();
    client.start();
    ft.last.open().send(snapshot(10, [inst('web', 'a'), inst('web', 'b'), inst('old', 'o')]));
    ft.last.end();
    clock.advance(100);
    updates.length = 0;
    // The control plane restarted: its history is empty, so it answers since=10 with a snapshot.
    ft.last.open().send(snapshot(6, [inst('web', 'a'), inst('web', 'c')]));
    assert.deepEqual(keys(client.endpoints('web')), ['web/a', 'web/c']);
    assert.equal(client.endpoints('old').size, 0);
    assert.deepEqual(client.services(), ['web']);
    assert.deepEqual(updates.sort(), [['old', []], ['web', ['web/a', 'web/c']]]);
    assert.equal(client.revision, 6);
    client.stop();
  });

  test('stop() closes the stream and leaves no timer; start() again resumes with since', () => {
    const { clock, ft, client } = setup();
    client.start();
    ft.last.open().send(snapshot(2, [inst('web', 'a')]));
    client.stop();
    assert.equal(client.status, 'stopped');
    assert.ok(ft.last.closed);
    assert.equal(clock.pending, 0, 'no liveness timer left');
    // Late callbacks from the closed connection are ignored.
    ft.last.send(diff('remove', 3, inst('web', 'a')));
    ft.last.end();
    assert.equal(client.endpoints('web').size, 1);
    assert.equal(clock.pending, 0, 'no reconnection scheduled');
    // Stopped while waiting to reconnect: the retry timer goes too.
    client.start();
    assert.equal(ft.last.url.searchParams.get('since'), '2');
    ft.last.end(refused());
    assert.equal(client.status, 'waiting');
    assert.ok(clock.pending > 0);
    client.stop();
    assert.equal(clock.pending, 0);
    clock.advance(60_000);
    assert.equal(ft.conns.length, 2);
  });

  test('dropConnection() loses the stream on purpose; listeners that throw do not break it', () => {
    const { clock, ft, client, errors } = setup();
    client.on('update', () => {
      throw new Error('listener bug');
    });
    client.start();
    ft.last.open().send(snapshot(2, [inst('web', 'a')]), diff('add', 3, inst('web', 'b')));
    assert.equal(client.revision, 3, 'both messages applied despite the throwing listener');
    client.dropConnection();
    assert.equal(errors[0]?.kind, 'dropped');
    assert.ok(ft.conns[0]?.closed);
    clock.advance(100);
    assert.equal(ft.last.url.searchParams.get('since'), '3');
    client.stop();
  });

  test('a listener may stop the client from inside an update', () => {
    const { clock, ft, client } = setup();
    client.on('update', () => client.stop());
    client.start();
    ft.last.open().send(snapshot(2, [inst('web', 'a')]), diff('add', 3, inst('web', 'b')));
    assert.equal(client.status, 'stopped');
    assert.equal(client.revision, 2, 'nothing after the message that stopped it');
    assert.equal(clock.pending, 0);
  });

  test('a transport that fails synchronously is retried like any failure', () => {
    const clock = new ManualClock(0);
    let calls = 0;
    const c = new WatchClient({
      controlUrl: 'http://h:1',
      clock,
      backoff: { next: () => 10, reset: () => {} },
      transport: (_url, h) => {
        calls++;
        if (calls === 1) throw new Error('boom');
        h.end(refused());
        return { close() {} };
      },
    });
    c.start();
    assert.equal(c.status, 'waiting');
    clock.advance(10);
    assert.equal(calls, 2);
    assert.equal(c.status, 'waiting');
    assert.equal(c.stats.disconnects, 2);
    c.stop();
    assert.equal(clock.pending, 0);
  });

  test('options are checked', () => {
    const clock = new ManualClock(0);
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ controlUrl: 'not a url' }, 'controlUrl'],
      [{ controlUrl: 'ftp://h/' }, 'controlUrl'],
      [{ controlUrl: 'http://h', service: '' }, 'service'],
      [{ controlUrl: 'http://h', livenessTimeoutMs: 0 }, 'livenessTimeoutMs'],
    ];
    for (const [o, field] of bad) {
      assert.throws(() => new WatchClient({ clock, ...o } as never), (e: unknown) => e instanceof SkeinError && e.field === field, JSON.stringify(o));
    }
    const b = new Backoff({ baseMs: 1, capMs: 2 });
    assert.ok(new WatchClient({ controlUrl: 'https://h', clock, backoff: b }));
  });
});

// ---- the real node:http transport against a scripted server ----

describe('WatchClient on several control-plane replicas', () => {
  const A = 'http://a.test:7400';
  const B = 'http://b.test:7400';
  function setupHa(opts: { connectTimeoutMs?: number } = {}) {
    const clock = new ManualClock(0);
    const ft = new FakeTransport();
    const control = new ControlReplicas([A, B], clock);
    const client = new WatchClient({ control, clock, rng: () => 0.5, transport: ft.transport, backoff: { baseMs: 1000, capMs: 8000 }, ...opts });
    const changed: number[] = [];
    client.on('changed', (rev) => changed.push(rev));
    return { clock, ft, control, client, changed };
  }

  test('a lost stream moves to the next replica at once and resumes there with since=; the first replica is then tried after the backoff', () => {
    const { clock, ft, control, client } = setupHa();
    client.start();
    assert.equal(ft.last.url.href, `${A}/v1/watch`);
    ft.last.open().send(snapshot(40, [inst('web', 'a'), inst('web', 'b')]));
    clock.advance(5000);
    ft.last.end(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    assert.equal(client.controlUrl, B);
    assert.equal(control.current, B);
    assert.equal(ft.conns.length, 1, 'not yet: the reconnection is a timer of 0 ms');
    clock.advance(0);
    assert.equal(ft.conns.length, 2);
    assert.equal(ft.last.url.href, `${B}/v1/watch?since=40`);
    assert.deepEqual(keys(client.endpoints('web')), ['web/a', 'web/b'], 'kept while moving');
    // B refuses too: back to A, after the backoff this time (one round of replicas was tried at once).
    ft.last.end(refused());
    assert.equal(control.current, A);
    clock.advance(499);
    assert.equal(ft.conns.length, 2);
    clock.advance(1);
    assert.equal(ft.conns.length, 3);
    assert.equal(ft.last.url.href, `${A}/v1/watch?since=40`);
  });

  test('a replica that does not answer within the connect timeout is left for the next', () => {
    const { clock, ft, client } = setupHa({ connectTimeoutMs: 2000 });
    const errors: string[] = [];
    client.on('disconnected', () => errors.push('disconnected'));
    client.start();
    clock.advance(1999);
    assert.equal(ft.conns.length, 1);
    clock.advance(1);
    assert.equal(ft.conns[0]?.closed, true);
    assert.equal(client.controlUrl, B);
    clock.advance(0);
    assert.equal(ft.last.url.href, `${B}/v1/watch`);
    ft.last.open().send({ type: 'ping', revision: 3 });
    // Connected: the (longer) liveness timeout applies, not the connect timeout.
    clock.advance(30_000);
    assert.equal(client.connected, true);
  });

  test('a snapshot after a failover replaces the view without touching endpoints that are still there (no flap)', () => {
    const { clock, ft, client } = setupHa();
    const updates: Array<[string, string[], string[]]> = [];
    client.start();
    ft.last.open().send(snapshot(10, [inst('web', 'a'), inst('web', 'b')]));
    const first = client.endpoints('web');
    client.on('update', (service, set) => {
      const c = set.changesSince(first);
      updates.push([service, (c?.upserted ?? []).map((e) => e.key), (c?.removed ?? []).map((e) => e.key)]);
    });
    ft.last.end(null);
    clock.advance(0);
    // B does not hold revision 10 in its history: a fresh snapshot, where b left and c joined.
    ft.last.open().send(snapshot(12, [inst('web', 'a'), inst('web', 'c')]));
    assert.deepEqual(updates, [['web', ['web/c'], ['web/b']]]);
    assert.deepEqual(keys(client.endpoints('web')), ['web/a', 'web/c']);
  });

  test('restore() serves a persisted snapshot until the stream answers, and only before the first message', () => {
    const { clock, ft, client, changed } = setupHa();
    const persisted = snapshot(33, [inst('web', 'a'), inst('web', 'down', { status: 'unhealthy' })], null, ['web']);
    assert.equal(client.restore(persisted as Extract<WatchMessage, { type: 'snapshot' }>), true);
    assert.deepEqual(keys(client.endpoints('web')), ['web/a']);
    assert.equal(client.knows('web'), true);
    assert.deepEqual(changed, [33]);
    // What the client would persist gives the same state back.
    const again = new WatchState();
    again.apply(client.snapshot());
    assert.deepEqual(keys(again.endpoints('web')), ['web/a']);
    assert.deepEqual(client.snapshot().instances.map((i) => i.id), ['a', 'down'], 'unhealthy instances are kept');
    assert.notEqual(again.definition('web'), null);
    client.start();
    assert.equal(ft.last.url.href, `${A}/v1/watch?since=33`, 'the stream resumes from the persisted revision');
    ft.last.open().send(snapshot(50, [inst('web', 'a')]));
    assert.equal(client.restore(persisted as Extract<WatchMessage, { type: 'snapshot' }>), false, 'a live state is never replaced by a persisted one');
    assert.equal(client.revision, 50);
    clock.advance(1);
  });
});

describe('WatchClient over node:http (scripted server)', () => {
  async function server(handler: (res: ServerResponse, url: URL, n: number) => void) {
    let n = 0;
    const urls: URL[] = [];
    const open = new Set<ServerResponse>();
    const srv = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      urls.push(url);
      open.add(res);
      res.on('close', () => open.delete(res));
      handler(res, url, n++);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    return {
      base: `http://127.0.0.1:${port}`,
      urls,
      open,
      close: () => new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
    };
  }

  async function until(fn: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 5000;
    while (!fn()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  test('chunks split inside lines and inside UTF-8 characters; stream end -> resume with since; stop closes the socket', async (t) => {
    const snap = Buffer.from(JSON.stringify(snapshot(5, [inst('web', 'a', { labels: { owner: 'zoë 🚀' } })])) + '\n');
    const s = await server((res, _url, n) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      if (n === 0) {
        // Byte by byte around the multibyte characters, then end the stream.
        const cut = snap.indexOf(Buffer.from('ë')) + 1;
        res.write(snap.subarray(0, cut));
        setTimeout(() => {
          res.write(snap.subarray(cut, cut + 3));
          setTimeout(() => res.end(snap.subarray(cut + 3)), 5);
        }, 5);
      } else {
        res.write(JSON.stringify(diff('add', 6, inst('web', 'b'))) + '\n');
      }
    });
    t.after(() => s.close());
    const c = new WatchClient({ controlUrl: s.base, clock: systemClock, backoff: { baseMs: 5, capMs: 20 } });
    c.start();
    await until(() => c.endpoints('web').size === 2, 'the resumed diff');
    assert.equal(c.endpoints('web').get('web/a')?.labels['owner'], 'zoë 🚀');
    assert.equal(s.urls[1]?.searchParams.get('since'), '5');
    assert.equal(c.stats.disconnects, 1);
    assert.equal(c.connected, true);
    c.stop();
    await until(() => s.open.size === 0, 'the server to see the stream closed');
  });

  test('connection refused, then an HTTP error, are retried until a stream opens', async (t) => {
    const errors: WatchStreamError[] = [];
    const s = await server((res, _url, n) => {
      if (n === 0) {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'SKEIN_E_SHUTTING_DOWN', message: 'the control plane is shutting down' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write(JSON.stringify(snapshot(1, [inst('web', 'a')])) + '\n');
    });
    t.after(() => s.close());
    // First point the client at a closed port by racing: use a port nothing listens on.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const deadPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const dead = new WatchClient({ controlUrl: `http://127.0.0.1:${deadPort}`, clock: systemClock, backoff: { baseMs: 5, capMs: 10 }, onError: (e) => errors.push(e) });
    dead.start();
    await until(() => errors.length >= 2, 'two refused attempts');
    dead.stop();
    assert.ok(errors.every((e) => e.kind === 'network' && /ECONNREFUSED/.test(e.message)), errors.map((e) => e.message).join('; '));
    errors.length = 0;
    const c = new WatchClient({ controlUrl: s.base, clock: systemClock, backoff: { baseMs: 5, capMs: 10 }, onError: (e) => errors.push(e) });
    c.start();
    await until(() => c.endpoints('web').size === 1, 'the snapshot');
    assert.equal(errors[0]?.kind, 'http');
    assert.equal(errors[0]?.status, 503);
    assert.match(errors[0]?.message ?? '', /SKEIN_E_SHUTTING_DOWN/);
    c.stop();
    await until(() => s.open.size === 0, 'the server to see the stream closed');
  });
});
