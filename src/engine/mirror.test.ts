/**
 * Mirroring's decisions without I/O (src/engine/mirror.ts): which requests are copied, the copy's
 * Host, its body kept while it fits, the cap on copies in flight, the timeout that abandons one,
 * and what is counted. A ServiceClient over a set of endpoints and a ManualClock; the driver is a
 * recorder. test/mirror.test.ts runs the same through a real proxy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import type { RoutePolicy } from '../api/traffic.js';
import { EndpointSet, type Endpoint } from '../discovery/endpoint.js';
import { ManualClock } from '../core/clock.js';
import { Mirrors, shadowAuthority, type MirrorCounters, type MirrorDropReason, type Shadow, type ShadowDriver } from './mirror.js';
import { ServiceClient, type Refusal } from './service-client.js';

class Counts implements MirrorCounters {
  readonly lines: string[] = [];
  mirrored(service: string, mirror: string, subset: string, status: number, seconds: number): void {
    this.lines.push(`sent ${service}->${mirror}[${subset}] ${status} ${seconds}s`);
  }
  mirrorDropped(service: string, mirror: string, subset: string, reason: MirrorDropReason): void {
    this.lines.push(`dropped ${service}->${mirror}[${subset}] ${reason}`);
  }
}

class Recorder implements ShadowDriver {
  readonly sent: string[] = [];
  aborted = 0;
  /** What abort says: the connection was never made. */
  connecting = false;
  refuse: Refusal | null = null;
  send(s: Shadow, e: Endpoint): Refusal | null {
    this.sent.push(`${e.id} ${s.authority('svc:8080')} ${Buffer.concat(s.body).toString()}`);
    return this.refuse;
  }
  abort(): boolean {
    this.aborted++;
    return this.connecting;
  }
}

const ep = (id: string, version: string, service = 'svc') => ({ service, id, address: '127.0.0.1', port: 1000 + id.length, version });

function setup(mirror: object, rng = () => 0) {
  const clock = new ManualClock();
  const counts = new Counts();
  const svc = parseService({ name: 'svc', retries: { maxBodyBytes: 10 }, mirror });
  const client = new ServiceClient('svc', svc, EndpointSet.of([ep('a1', 'v1'), ep('b22', 'v2')]), clock, () => undefined, null);
  const other = new ServiceClient('other', parseService({ name: 'other' }), EndpointSet.of([ep('o333', '', 'other')]), clock, () => undefined, null);
  const mirrors = new Mirrors(counts, clock, rng, (s) => (s === 'other' ? other : null));
  const route = client.traffic.policy.routes.at(-1) as RoutePolicy;
  const shadow = (o: { idempotent?: boolean; upgrade?: boolean; direction?: 'outbound' | 'inbound' } = {}) => mirrors.shadow(o.direction ?? 'outbound', client, route, o.idempotent ?? true, o.upgrade ?? false);
  return { clock, counts, mirrors, shadow, hash: {} as never };
}

test('the copy\'s Host: the suffix goes before the port, after an IPv6 literal, or nowhere when empty', () => {
  assert.equal(shadowAuthority('users', '-shadow'), 'users-shadow');
  assert.equal(shadowAuthority('users:8080', '-shadow'), 'users-shadow:8080');
  assert.equal(shadowAuthority('users.service.skein:80', '.copy'), 'users.service.skein.copy:80');
  assert.equal(shadowAuthority('[::1]:80', '-s'), '[::1]-s:80');
  assert.equal(shadowAuthority('[::1]', '-s'), '[::1]-s');
  assert.equal(shadowAuthority('users:8080', ''), 'users:8080');
});

test('what is copied: outbound, not an upgrade, idempotent unless the mirror says otherwise, within the share', () => {
  const m = setup({ subset: { version: 'v2' } });
  assert.equal(m.shadow({ direction: 'inbound' }), null);
  assert.equal(m.shadow({ upgrade: true }), null);
  assert.equal(m.shadow({ idempotent: false }), null);
  assert.notEqual(m.shadow(), null);
  assert.notEqual(setup({ subset: { version: 'v2' }, nonIdempotent: true }).shadow({ idempotent: false }), null);
  // percent 30: a draw of 0.29 is in the share, 0.30 is not.
  assert.notEqual(setup({ subset: { version: 'v2' }, percent: 30 }, () => 0.29).shadow(), null);
  assert.equal(setup({ subset: { version: 'v2' }, percent: 30 }, () => 0.3).shadow(), null);
  assert.equal(setup({ subset: { version: 'v2' }, percent: 0 }, () => 0).shadow(), null);
});

test('a copy goes to the subset (or the other service) with its body; a body past retries.maxBodyBytes drops it', () => {
  const m = setup({ subset: { version: 'v2' }, hostSuffix: '-copy' });
  const d = new Recorder();
  const s = m.shadow() as Shadow;
  s.requestBody(Buffer.from('hello'));
  s.requestBody(Buffer.from('12345'));
  s.send(d, m.hash);
  assert.deepEqual(d.sent, ['b22 svc-copy:8080 hello12345'], 'the v2 instance, the Host suffixed, the 10 bytes');
  m.clock.advance(7);
  s.answered(503);
  assert.deepEqual(m.counts.lines, ['sent svc->svc[version=v2] 503 0.007s']);
  assert.equal(m.mirrors.active, 0);

  const big = m.shadow() as Shadow;
  big.requestBody(Buffer.from('hello'));
  big.requestBody(Buffer.from('123456'));
  assert.equal(big.taking, false);
  big.send(d, m.hash);
  assert.equal(d.sent.length, 1, 'a copy whose body outgrew the buffer is not sent');
  assert.equal(m.counts.lines.at(-1), 'dropped svc->svc[version=v2] body');

  const o = setup({ service: 'other' });
  const so = o.shadow() as Shadow;
  so.send(d, o.hash);
  assert.equal(d.sent.at(-1), 'o333 svc-shadow:8080 ');
  const gone = setup({ service: 'nowhere' });
  assert.equal(gone.shadow(), null);
  assert.deepEqual(gone.counts.lines, ['dropped svc->nowhere[] no_endpoint']);
});

test('at most maxInFlight copies are out: the next is dropped and counted until one ends; a client that leaves cancels its copy', () => {
  const m = setup({ subset: { version: 'v2' }, maxInFlight: 2 });
  const d = new Recorder();
  const a = m.shadow() as Shadow;
  const b = m.shadow() as Shadow;
  assert.equal(m.shadow(), null);
  assert.deepEqual(m.counts.lines, ['dropped svc->svc[version=v2] limit']);
  a.send(d, m.hash);
  a.failed();
  assert.equal(m.counts.lines.at(-1), 'sent svc->svc[version=v2] 0 0s');
  const c = m.shadow() as Shadow;
  assert.notEqual(c, null, 'the place a finished copy held is free');
  b.cancel();
  assert.equal(m.counts.lines.at(-1), 'dropped svc->svc[version=v2] incomplete');
  assert.equal(m.mirrors.active, 1);
  c.cancel();
  assert.equal(m.mirrors.active, 0);
});

test('a copy without an answer by its timeout is abandoned: the driver aborts it, it counts as status 0, a late answer counts nothing', () => {
  const m = setup({ subset: { version: 'v2' }, timeout: '250ms' });
  const d = new Recorder();
  const s = m.shadow() as Shadow;
  s.send(d, m.hash);
  m.clock.advance(249);
  assert.equal(d.aborted, 0);
  m.clock.advance(1);
  assert.equal(d.aborted, 1);
  assert.deepEqual(m.counts.lines, ['sent svc->svc[version=v2] 0 0.25s']);
  s.answered(200);
  assert.equal(m.counts.lines.length, 1);
  assert.equal(m.mirrors.active, 0);
});

test('a copy the driver refuses (connection limits, mTLS) is dropped as refused and frees its place', () => {
  const m = setup({ subset: { version: 'v2' }, maxInFlight: 1 });
  const d = new Recorder();
  d.refuse = { code: 'SKEIN_E_UPSTREAM_OVERFLOW', message: 'full' };
  (m.shadow() as Shadow).send(d, m.hash);
  assert.deepEqual(m.counts.lines, ['dropped svc->svc[version=v2] refused']);
  assert.equal(m.mirrors.active, 0);
  m.clock.advance(60_000);
  assert.equal(d.aborted, 0, 'no timer is left behind');
});

test('an endpoint that refused a copy\'s connection is skipped for 1 s, then 2 s, ...; one that answers is tried again at once', () => {
  const m = setup({ subset: { version: 'v2' }, maxInFlight: 10 });
  const d = new Recorder();
  const failOnce = () => {
    const s = m.shadow() as Shadow;
    s.send(d, m.hash);
    s.failed(true);
  };
  failOnce();
  assert.equal(d.sent.length, 1);
  (m.shadow() as Shadow).send(d, m.hash);
  assert.equal(d.sent.length, 1, 'skipped');
  assert.equal(m.counts.lines.at(-1), 'dropped svc->svc[version=v2] backoff');
  assert.equal(m.mirrors.active, 0, 'a skipped copy holds no place');
  m.clock.advance(1000);
  failOnce();
  assert.equal(d.sent.length, 2, 'tried again after 1 s; refused again');
  m.clock.advance(1999);
  (m.shadow() as Shadow).send(d, m.hash);
  assert.equal(d.sent.length, 2, 'now skipped for 2 s');
  m.clock.advance(1);
  const ok = m.shadow() as Shadow;
  ok.send(d, m.hash);
  ok.answered(200);
  assert.equal(d.sent.length, 3);
  // Reached: no backoff left, even after a reset (not a refused connection).
  const reset = m.shadow() as Shadow;
  reset.send(d, m.hash);
  reset.failed();
  (m.shadow() as Shadow).send(d, m.hash);
  assert.equal(d.sent.length, 5, 'a reset is not a refused connection: no skip');
});

test('a copy whose connect outlives its timeout (a black-holed shadow) is backed off like a refused one; one connected but silent is not', () => {
  const m = setup({ subset: { version: 'v2' }, timeout: '100ms' });
  const d = new Recorder();
  d.connecting = true;
  (m.shadow() as Shadow).send(d, m.hash);
  m.clock.advance(100);
  assert.equal(d.aborted, 1);
  (m.shadow() as Shadow).send(d, m.hash);
  assert.equal(m.counts.lines.at(-1), 'dropped svc->svc[version=v2] backoff');
  m.clock.advance(1000);
  d.connecting = false;
  (m.shadow() as Shadow).send(d, m.hash);
  m.clock.advance(100);
  assert.equal(d.aborted, 2);
  (m.shadow() as Shadow).send(d, m.hash);
  assert.equal(d.sent.length, 3, 'a silent but connected endpoint is not skipped');
});

test('a driver that throws drops the copy as refused and frees its place', () => {
  const m = setup({ subset: { version: 'v2' }, maxInFlight: 1 });
  const d = new Recorder();
  d.send = () => {
    throw new Error('boom');
  };
  (m.shadow() as Shadow).send(d, m.hash);
  assert.deepEqual(m.counts.lines, ['dropped svc->svc[version=v2] refused']);
  assert.equal(m.mirrors.active, 0);
});
