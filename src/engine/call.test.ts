/**
 * The request engine without sockets: an in-memory driver (`Net`) stands for a protocol. Each
 * endpoint has a behaviour (answer a status after some ms, refuse the connection, reset, hang,
 * answer a peer proxy's refusal); the driver turns the call's decisions into those outcomes on a
 * ManualClock, and the tests check the decisions and what the client ends up with. The HTTP/1
 * driver's own tests (test/proxy-*.test.ts) then only check that its I/O follows them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import type { RoutePolicy } from '../api/traffic.js';
import { setOf } from '../balance/test-helpers.js';
import { ManualClock } from '../core/clock.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { admit, callerOf, deadlineOf, isRefusal } from './admission.js';
import { Call, type Attempt, type CallDriver, type CallFailure, type CallRequest } from './call.js';
import { ServiceClient, type Refusal } from './service-client.js';

type Behaviour =
  | { readonly kind: 'status'; readonly status: number; readonly ms?: number; readonly peerRefused?: boolean; readonly connectMs?: number; readonly bodyStalls?: boolean }
  | { readonly kind: 'refuse' | 'hang'; readonly ms?: number }
  | { readonly kind: 'reset' | 'protocol'; readonly ms?: number; readonly reused?: boolean };

/** What the client got. */
type Answer = { readonly status: number; readonly from: string } | { readonly failure: CallFailure } | null;

/** An in-memory protocol driver: no sockets, outcomes on the clock. */
class Net implements CallDriver {
  readonly log: string[] = [];
  readonly sent: Attempt[] = [];
  answer: Answer = null;
  refuseNext: Refusal | null = null;
  /** Behaviours per endpoint id, used in order (the last one repeats). */
  readonly plan = new Map<string, Behaviour[]>();
  private pending: { cancel(): void } | null = null;
  call!: Call;

  constructor(private readonly clock: ManualClock) {}

  send(a: Attempt): Refusal | null {
    this.log.push(`send ${a.endpoint.id}${a.fresh ? ' fresh' : ''}${a.body.length > 0 ? ` body=${a.body.length}` : ''}`);
    if (this.refuseNext !== null) {
      const r = this.refuseNext;
      this.refuseNext = null;
      return r;
    }
    this.sent.push(a);
    const list = this.plan.get(a.endpoint.id) ?? [{ kind: 'status', status: 200 }];
    const b = (list.length > 1 ? list.shift() : list[0]) as Behaviour;
    // Outcomes come after send returns, as from a network.
    const ms = 'ms' in b && b.ms !== undefined ? b.ms : 1;
    if (b.kind === 'status' && b.connectMs !== undefined) {
      // Connected (a handshake) after connectMs, then answered `ms` later.
      this.pending = this.clock.setTimeout(() => {
        this.call.connected();
        this.pending = this.clock.setTimeout(() => this.outcome(a.endpoint, b, true), ms);
      }, b.connectMs);
      return null;
    }
    this.pending = this.clock.setTimeout(() => this.outcome(a.endpoint, b), ms);
    return null;
  }

  private outcome(e: Endpoint, b: Behaviour, connected = false): void {
    this.pending = null;
    const call = this.call;
    if (b.kind === 'refuse') return call.connectFailed('ECONNREFUSED');
    if (b.kind === 'hang') {
      call.connected();
      return;
    }
    if (!connected) call.connected();
    if (b.kind !== 'status') {
      this.log.push(`${b.kind} ${e.id}`);
      if (call.reset(b.kind, 'socket hang up', 'reused' in b && b.reused === true, false)) this.log.push('cut');
      return;
    }
    const verdict = call.responseHead(b.status, b.peerRefused === true);
    this.log.push(`${b.status} ${e.id} ${verdict}`);
    if (verdict === 'discard') {
      if (b.bodyStalls !== true) call.discarded();
      return;
    }
    this.answer = { status: b.status, from: e.id };
    if (b.bodyStalls !== true) call.responseComplete();
  }

  abandon(): void {
    this.log.push('abandon');
    this.pending?.cancel();
    this.pending = null;
  }

  fail(f: CallFailure): void {
    this.log.push(`fail ${f.code}`);
    this.answer = { failure: f };
  }
}

const counters = () => {
  const c = { retries: [] as string[], exhausted: 0 };
  return { c, counters: { retry: (_s: string, r: string) => void c.retries.push(r), retryBudgetExhausted: () => void c.exhausted++ } };
};

/** A service of `n` endpoints (e0, e1, ...) with the traffic policy of a Service resource. */
function setup(policy: object = {}, n = 2, clock = new ManualClock()) {
  const events: string[] = [];
  const svc = parseService({ name: 'svc', ...policy });
  const client = new ServiceClient('svc', svc, setOf(n), clock, (e) => events.push(`${e.type} ${'endpoint' in e ? e.endpoint : ''}`), null);
  const net = new Net(clock);
  const { c, counters: cs } = counters();
  const route = client.traffic.routes.match({ method: 'GET', path: '/', header: () => undefined }) as RoutePolicy;
  const call = (req: Partial<CallRequest> = {}, rng = () => 0.5) => {
    const r: CallRequest = { direction: 'outbound', route, idempotent: true, hasBody: false, upgrade: false, timeoutMs: route.requestTimeoutMs, delayMs: 0, hash: { header: () => undefined, sourceAddress: '127.0.0.1' }, hop: null, ...req };
    const k = new Call(client, r, net, clock, cs, rng);
    net.call = k;
    return k;
  };
  const key = (id: string) => client.balancer.set.list().find((e) => e.id === id)?.key as string;
  return { clock, client, net, c, call, key, events, traffic: client.traffic };
}

test('one attempt: the response is delivered, the request counted in the budget once, nothing left in flight', () => {
  const { clock, net, call, traffic } = setup();
  const k = call();
  k.start();
  assert.equal(traffic.active, 1, 'in flight while the attempt is out');
  clock.advance(1);
  assert.deepEqual(net.answer, { status: 200, from: net.sent[0]?.endpoint.id });
  assert.equal(k.attempts, 1);
  assert.equal(traffic.active, 0);
  assert.equal(k.done, true);
  assert.match(k.explanation(), /^route=default; service=svc; endpoint=e\d \(10\.0\.0\.\d+:8080\); attempts=1; budget=\d+; timeout=15000ms$/);
});

test("the balancer's latency sample runs from the request leaving to its response head: not the connection's set-up, nor an earlier attempt", () => {
  const { clock, net, call, client } = setup({ balancer: { kind: 'round-robin' } });
  const samples: number[] = [];
  const start = client.start.bind(client);
  client.start = (e) => {
    const c = start(e);
    return { end: (o) => (samples.push(o.latencyMs), c.end(o)) };
  };
  // A slow handshake (40 ms), then an answer 3 ms later.
  net.plan.set('e0', [{ kind: 'status', status: 200, connectMs: 40, ms: 3 }]);
  net.plan.set('e1', [{ kind: 'status', status: 200, connectMs: 40, ms: 3 }]);
  const k = call();
  k.start();
  clock.advance(43);
  assert.equal(k.done, true);
  assert.deepEqual(samples, [3]);
  assert.equal(k.latencyMs, 3);
  // A reset after 10 ms, retried: the second endpoint's sample is its own 3 ms.
  net.plan.set('e0', [{ kind: 'reset', ms: 10 }]);
  net.plan.set('e1', [{ kind: 'reset', ms: 10 }]);
  const first = call();
  first.start();
  const id = net.sent.at(-1)?.endpoint.id as string;
  net.plan.set(id === 'e0' ? 'e1' : 'e0', [{ kind: 'status', status: 200, connectMs: 5, ms: 3 }]);
  clock.advance(200);
  assert.equal(first.done, true);
  assert.equal(samples.at(-1), 3, `samples: ${JSON.stringify(samples)}`);
});

test('a connect failure is retried on the other endpoint, and the explanation names the failed one', () => {
  const { clock, net, call, c } = setup();
  const k = call();
  net.plan.set('e0', [{ kind: 'refuse' }]);
  net.plan.set('e1', [{ kind: 'refuse' }]);
  k.start();
  const first = net.sent[0]?.endpoint.id as string;
  const other = first === 'e0' ? 'e1' : 'e0';
  net.plan.set(other, [{ kind: 'status', status: 200 }]);
  clock.advance(1000);
  assert.deepEqual(net.answer, { status: 200, from: other });
  assert.deepEqual(c.retries, ['connect-failure']);
  assert.equal(k.attempts, 2);
  assert.match(k.explanation(), new RegExp(`failed=${first}: connect failed: ECONNREFUSED`));
});

test('reset before the response on a retry too: after maxRetries the client gets SKEIN_E_UPSTREAM_RESET with every attempt in its details', () => {
  const { clock, net, call, c } = setup({ retries: { maxRetries: 2 } });
  net.plan.set('e0', [{ kind: 'reset' }]);
  net.plan.set('e1', [{ kind: 'reset' }]);
  const k = call();
  k.start();
  clock.advance(5000);
  assert.equal(net.sent.length, 3, 'the first attempt and two retries');
  assert.deepEqual(c.retries, ['reset', 'reset']);
  const a = net.answer as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_RESET');
  assert.equal(a.failure.status, 502);
  assert.equal((a.failure.details.tried as unknown[]).length, 3);
  assert.equal(a.failure.details.retries, 2);
  assert.equal(k.attempts, 3);
});

test('budget exhausted mid-request: the failure is answered, the budget refusal is counted and shown', () => {
  const { clock, net, call, c } = setup({ retries: { budget: { ratio: 0, minRetriesPerSecond: 0 } } });
  net.plan.set('e0', [{ kind: 'refuse' }]);
  net.plan.set('e1', [{ kind: 'refuse' }]);
  const k = call();
  k.start();
  clock.advance(10);
  const a = net.answer as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_CONNECT');
  assert.equal(net.sent.length, 1, 'no retry without budget');
  assert.equal(c.exhausted, 1);
  assert.deepEqual(a.failure.details.budget, { available: 0, refusedARetry: true });
  assert.match(a.failure.explanation, /budget=0 \(a retry was refused by the budget\)/);
});

test('a breaker probe the client abandons counts as a failure: the breaker opens again instead of waiting half-open forever', () => {
  const { clock, net, call, traffic, key } = setup({ outlierDetection: { enabled: false }, breaker: { consecutiveFailures: 1, backoff: { min: '1s', max: '1s' } } }, 1);
  traffic.record(key('e0'), 0);
  assert.equal(traffic.breakers?.state(key('e0')), 'open');
  clock.advance(1000);
  net.plan.set('e0', [{ kind: 'hang' }]);
  const k = call({ timeoutMs: 0 });
  k.start();
  assert.equal(traffic.breakers?.state(key('e0')), 'half-open', 'the probe is out');
  clock.advance(5);
  k.clientGone();
  assert.equal(traffic.breakers?.state(key('e0')), 'open', 'the abandoned probe failed');
  assert.equal(traffic.active, 0);
  // An ordinary request the client abandons says nothing about the endpoint.
  clock.advance(1000);
  net.plan.set('e0', [{ kind: 'status', status: 200 }]);
  call().start();
  clock.advance(1);
  assert.equal(traffic.breakers?.state(key('e0')), 'closed');
  net.plan.set('e0', [{ kind: 'hang' }]);
  const k3 = call({ timeoutMs: 0 });
  k3.start();
  k3.clientGone();
  assert.equal(traffic.breakers?.state(key('e0')), 'closed');
});

test('deadline during backoff: a retry whose backoff would end past the deadline is not made; the call fails at once', () => {
  const { clock, net, call, c } = setup({ timeouts: { request: '100ms' }, retries: { backoff: { base: '1s', max: '1s' } } });
  net.plan.set('e0', [{ kind: 'refuse', ms: 60 }]);
  net.plan.set('e1', [{ kind: 'refuse', ms: 60 }]);
  const k = call({}, () => 0.5); // backoff 500 ms > the 99 ms left
  k.start();
  clock.advance(1);
  assert.equal(net.answer, null);
  clock.advance(59);
  const a = net.answer as unknown as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_CONNECT', 'the attempt failure is the answer');
  assert.deepEqual(c.retries, []);
  assert.equal(net.sent.length, 1);
  assert.equal(k.done, true);
});

test('the overall deadline ends a hanging attempt with SKEIN_E_UPSTREAM_TIMEOUT exactly on time, and the attempt is abandoned', () => {
  const { clock, net, call } = setup({ timeouts: { request: '250ms' } });
  net.plan.set('e0', [{ kind: 'hang' }]);
  net.plan.set('e1', [{ kind: 'hang' }]);
  const k = call();
  k.start();
  clock.advance(249);
  assert.equal(net.answer, null);
  clock.advance(1);
  const a = net.answer as unknown as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_TIMEOUT');
  assert.match(a.failure.message, /^no response from "svc" within 250 ms \(last: e\d at 10\.0\.0\.\d+:8080\)$/);
  assert.deepEqual(net.log.slice(-2), ['abandon', 'fail SKEIN_E_UPSTREAM_TIMEOUT']);
  assert.equal(a.failure.details.timeoutMs, 250);
});

test("a dropped 503 whose body stalls ends at the deadline's timer even when it fires before the clock reaches the deadline: no retry squeezed into the last ms", () => {
  // Node's timers fire up to a ms early against the precise clock; a backoff of 0.25 ms "fits".
  const clock = new ManualClock(1_700_000_000_000, { earlyMs: 0.5 });
  const { net, call, c } = setup({ timeouts: { request: '500ms' }, retries: { statuses: [503], backoff: { base: '25ms', max: '250ms' } } }, 1, clock);
  net.plan.set('e0', [{ kind: 'status', status: 503, bodyStalls: true, ms: 1 }, { kind: 'status', status: 503, bodyStalls: true, ms: 0.1 }]);
  const k = call({}, () => 0.01);
  k.start();
  clock.advance(1);
  assert.deepEqual(net.log, ['send e0', '503 e0 discard']);
  clock.advance(499);
  const a = net.answer as unknown as { failure: CallFailure };
  assert.ok(a !== null && 'failure' in a, `the client gets the proxy's timeout, not a 503 whose body never ends (log: ${net.log.join(' | ')})`);
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_TIMEOUT');
  assert.equal(a.failure.message, 'no response from "svc" within 500 ms');
  assert.equal(net.sent.length, 1, 'no second attempt');
  assert.deepEqual(c.retries, ['status'], 'the retry was decided when the 503 came, then given up at the deadline');
  assert.equal(k.done, true);
});

test('a per-try timeout retries on the other endpoint within the overall deadline', () => {
  const { clock, net, call, c } = setup({ timeouts: { request: '1s', perTry: '100ms' } });
  const k = call();
  net.plan.set('e0', [{ kind: 'hang' }]);
  net.plan.set('e1', [{ kind: 'hang' }]);
  k.start();
  const first = net.sent[0]?.endpoint.id as string;
  const other = first === 'e0' ? 'e1' : 'e0';
  net.plan.set(other, [{ kind: 'status', status: 200, ms: 10 }]);
  clock.advance(100);
  assert.deepEqual(c.retries, ['per-try-timeout']);
  clock.advance(500);
  assert.deepEqual(net.answer, { status: 200, from: other });
  assert.ok(net.log.includes('abandon'));
});

test('a stale pooled connection (reset before any byte, GET, no body) is replaced by a fresh one to the same endpoint: no retry, no failure recorded', () => {
  const { clock, net, call, c, traffic, key } = setup({ breaker: { consecutiveFailures: 1 } }, 1);
  net.plan.set('e0', [{ kind: 'reset', reused: true }, { kind: 'status', status: 200 }]);
  const k = call();
  k.start();
  clock.advance(10);
  assert.deepEqual(net.log, ['send e0', 'reset e0', 'send e0 fresh', '200 e0 deliver']);
  assert.deepEqual(net.answer, { status: 200, from: 'e0' });
  assert.deepEqual(c.retries, []);
  assert.equal(traffic.breakers?.state(key('e0')), 'closed');
  // Once only: a second reset on the fresh connection is a failure of the endpoint.
  net.plan.set('e0', [{ kind: 'reset', reused: true }, { kind: 'reset', reused: true }]);
  const k2 = call({ idempotent: true });
  k2.start();
  clock.advance(10);
  assert.equal(traffic.breakers?.state(key('e0')), 'open');
  void k;
});

test('a peer proxy refusal is retried whatever the method and counts as a mesh failure, not as the app\'s 5xx', () => {
  const { clock, net, call, c, traffic, key } = setup({ breaker: { enabled: false } });
  net.plan.set('e0', [{ kind: 'status', status: 502, peerRefused: true }]);
  net.plan.set('e1', [{ kind: 'status', status: 502, peerRefused: true }]);
  const k = call({ idempotent: false, hasBody: false });
  k.start();
  const first = net.sent[0]?.endpoint.id as string;
  const other = first === 'e0' ? 'e1' : 'e0';
  net.plan.set(other, [{ kind: 'status', status: 201 }]);
  clock.advance(1000);
  assert.deepEqual(c.retries, ['refused-stream']);
  assert.deepEqual(net.answer, { status: 201, from: other });
  assert.equal(traffic.outlier?.snapshot() !== null, true);
  // Four more refusals from the first endpoint make five local-origin failures in a row: ejected.
  for (let i = 0; i < 4; i++) traffic.record(key(first), 0);
  assert.equal(traffic.outlier?.isEjected(key(first)), true, 'the refusal was recorded as a local-origin failure');
});

test('an app 5xx that is not in retries.statuses is delivered as it is, not retried', () => {
  const { clock, net, call, c } = setup();
  net.plan.set('e0', [{ kind: 'status', status: 502 }]);
  net.plan.set('e1', [{ kind: 'status', status: 502 }]);
  const k = call();
  k.start();
  clock.advance(5);
  assert.equal((net.answer as { status: number }).status, 502);
  assert.deepEqual(c.retries, []);
  assert.equal(k.attempts, 1);
});

test('a retryable status is read and dropped, then retried with the kept body; a body too large to keep is never resent', () => {
  const { clock, net, call, c } = setup({ retries: { maxBodyBytes: 8, nonIdempotent: true } });
  net.plan.set('e0', [{ kind: 'status', status: 503 }]);
  net.plan.set('e1', [{ kind: 'status', status: 503 }]);
  const k = call({ hasBody: true, idempotent: false });
  k.requestBody(Buffer.from('abc'));
  k.requestComplete();
  k.start();
  const first = net.sent[0]?.endpoint.id as string;
  const other = first === 'e0' ? 'e1' : 'e0';
  net.plan.set(other, [{ kind: 'status', status: 200 }]);
  clock.advance(1000);
  assert.deepEqual(c.retries, ['status']);
  assert.equal(Buffer.concat(net.sent[1]?.body as Uint8Array[]).toString(), 'abc');
  assert.deepEqual(net.answer, { status: 200, from: other });

  const big = call({ hasBody: true, idempotent: false });
  net.plan.set('e0', [{ kind: 'status', status: 503 }]);
  net.plan.set('e1', [{ kind: 'status', status: 503 }]);
  big.requestBody(Buffer.alloc(9));
  big.requestComplete();
  big.start();
  clock.advance(1000);
  assert.equal((net.answer as { status: number }).status, 503, 'delivered: the body was not kept');
  assert.deepEqual(c.retries, ['status']);
});

test('a body that outgrows retries.maxBodyBytes during a retry\'s backoff is never sent in part: the call fails, naming the limit', () => {
  const { clock, net, call, c } = setup({ retries: { maxBodyBytes: 8, backoff: { base: '100ms', max: '100ms' } } });
  net.plan.set('e0', [{ kind: 'refuse' }]);
  net.plan.set('e1', [{ kind: 'refuse' }]);
  const k = call({ hasBody: true, idempotent: true });
  k.requestBody(Buffer.from('abc'));
  k.start();
  // Backoff is 0..100 ms (full jitter, rng 0.5): the connect failure is at 1 ms, the retry later.
  clock.advance(1);
  assert.deepEqual(c.retries, ['connect-failure'], 'a retry is scheduled with the 3 bytes kept');
  k.requestBody(Buffer.alloc(6));
  clock.advance(200);
  assert.equal(net.sent.length, 1, 'no second attempt with a partial body');
  const a = net.answer as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_RESET');
  assert.match(a.failure.message, /could not be sent again: its body was not kept \(more than retries.maxBodyBytes, 8 bytes\)/);
});

test('a retryable status before the whole request body is in is delivered (the kept body could still change)', () => {
  const { clock, net, call, c } = setup();
  net.plan.set('e0', [{ kind: 'status', status: 503 }]);
  net.plan.set('e1', [{ kind: 'status', status: 503 }]);
  const k = call({ hasBody: true, idempotent: true });
  k.requestBody(Buffer.from('x'));
  k.start();
  clock.advance(5);
  assert.equal((net.answer as { status: number }).status, 503);
  assert.deepEqual(c.retries, []);
});

test('a connection limit refuses the attempt: SKEIN_E_UPSTREAM_OVERFLOW, no breaker probe held, no budget deposit', () => {
  const { net, call, traffic, key } = setup({ breaker: { consecutiveFailures: 1, backoff: { min: '1s', max: '1s' } } }, 1);
  const before = traffic.budget.available;
  net.refuseNext = { code: 'SKEIN_E_UPSTREAM_OVERFLOW', message: '"svc" has 1 connections (limits.maxConnections 1)' };
  const k = call();
  k.start();
  const a = net.answer as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_OVERFLOW');
  assert.equal(a.failure.status, 503);
  assert.equal(traffic.breakers?.state(key('e0')), 'closed');
  assert.equal(traffic.budget.available, before, 'nothing deposited');
  assert.equal(traffic.active, 0);
});

test('no endpoint left: every one behind an open breaker gives SKEIN_E_BREAKER_OPEN saying so', () => {
  const { net, call, traffic, key } = setup({ outlierDetection: { enabled: false }, breaker: { consecutiveFailures: 1 } });
  traffic.record(key('e0'), 0);
  traffic.record(key('e1'), 0);
  call().start();
  const a = net.answer as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_BREAKER_OPEN');
  assert.equal(a.failure.message, 'none of the 2 instances of "svc" may take requests now: 2 behind an open circuit breaker');
  assert.deepEqual(a.failure.details.breakers, { open: 2, halfOpen: 0 });
  assert.equal(net.sent.length, 0);
});

test('a malformed response is not retried: SKEIN_E_UPSTREAM_PROTOCOL', () => {
  const { clock, net, call, c } = setup();
  net.plan.set('e0', [{ kind: 'protocol' }]);
  net.plan.set('e1', [{ kind: 'protocol' }]);
  call().start();
  clock.advance(5);
  assert.equal((net.answer as { failure: CallFailure }).failure.code, 'SKEIN_E_UPSTREAM_PROTOCOL');
  assert.deepEqual(c.retries, []);
});

test('a response cut after bytes reached the client: the driver is told to cut the client off, nothing is retried', () => {
  const { clock, net, call, traffic } = setup();
  net.plan.set('e0', [{ kind: 'hang' }]);
  net.plan.set('e1', [{ kind: 'hang' }]);
  const k = call();
  k.start();
  clock.advance(1);
  assert.equal(k.responseHead(200, false), 'deliver');
  assert.equal(k.reset('reset', 'socket hang up', false, true), true);
  assert.equal(k.done, true);
  assert.equal(traffic.active, 0);
  // Before any byte left, the same cut can still be answered properly (here: retried).
  const k2 = call();
  k2.start();
  clock.advance(1);
  k2.responseHead(200, false);
  assert.equal(k2.reset('reset', 'socket hang up', false, false), false);
  assert.equal(k2.done, false, 'a retry is under way');
});

test('a fault delay holds the first attempt; the deadline still counts from the start', () => {
  const { clock, net, call } = setup({ timeouts: { request: '100ms' } });
  const k = call({ delayMs: 150 });
  k.start();
  assert.equal(net.sent.length, 0);
  clock.advance(150);
  assert.equal(net.sent.length, 0, 'the deadline passed during the delay');
  assert.equal((net.answer as { failure: CallFailure }).failure.code, 'SKEIN_E_UPSTREAM_TIMEOUT');
});

test('inbound: one attempt at the app, never retried, no breaker or budget', () => {
  const { clock, net, call, c, traffic } = setup();
  net.plan.set('e0', [{ kind: 'refuse' }]);
  net.plan.set('e1', [{ kind: 'refuse' }]);
  const before = traffic.budget.available;
  call({ direction: 'inbound', timeoutMs: 0 }).start();
  clock.advance(5);
  assert.equal((net.answer as { failure: CallFailure }).failure.code, 'SKEIN_E_UPSTREAM_CONNECT');
  assert.equal(net.sent.length, 1);
  assert.deepEqual(c.retries, []);
  assert.equal(traffic.budget.available, before);
  assert.equal(traffic.active, 0);
});

test('admission: rate limit, then fault abort and delay from the injected random source, then maxRequests', () => {
  const { traffic } = setup({
    limits: { maxRequests: 1 },
    routes: [{ name: 'r', match: { pathPrefix: '/' }, rateLimit: { outbound: { requestsPerSecond: 1, burst: 1 } }, fault: { abort: { status: 418, percent: 50 }, delay: { duration: '40ms', percent: 50 } } }],
  });
  const route = traffic.routes.match({ method: 'GET', path: '/x', header: () => undefined });
  const rl: string[] = [];
  const counters = { rateLimited: (d: string, s: string, r: string) => void rl.push(`${d} ${s} ${r}`) };
  // Below 50: abort.
  const a = admit(traffic, route, 'outbound', 'web', () => 0.1, counters);
  assert.ok(isRefusal(a));
  assert.equal(a.code, 'SKEIN_E_FAULT_INJECTED');
  assert.equal(a.status, 418);
  // The rate limit (burst 1) is spent now.
  const b = admit(traffic, route, 'outbound', 'web', () => 0.9, counters);
  assert.ok(isRefusal(b));
  assert.equal(b.code, 'SKEIN_E_RATE_LIMITED');
  assert.equal(b.retryAfterMs, 1000);
  assert.deepEqual(rl, ['outbound svc r']);
});

test('admission: no abort at 0.9, a delay at 0.2 after passing the abort, and maxRequests counts calls in flight', () => {
  const { traffic, call, clock } = setup({
    limits: { maxRequests: 1 },
    routes: [{ name: 'r', match: { pathPrefix: '/' }, fault: { abort: { status: 418, percent: 50 }, delay: { duration: '40ms', percent: 50 } } }],
  });
  const route = traffic.routes.match({ method: 'GET', path: '/x', header: () => undefined });
  const none = { rateLimited: () => undefined };
  const draws = [0.9, 0.2];
  const d = admit(traffic, route, 'outbound', 'web', () => draws.shift() as number, none);
  assert.deepEqual(d, { delayMs: 40 });
  const k = call({ route });
  k.start();
  const o = admit(traffic, route, 'outbound', 'web', () => 0.99, none);
  assert.ok(isRefusal(o));
  assert.equal(o.code, 'SKEIN_E_UPSTREAM_OVERFLOW');
  assert.deepEqual(o.details, { service: 'svc', route: 'r', inFlight: 1, limit: 1 });
  clock.advance(10);
  assert.deepEqual(admit(traffic, route, 'outbound', 'web', () => 0.99, none), { delayMs: 0 });
});

test('panic mode: the only instance, ejected, still gets the request, and the explanation and error details say the proxy panicked', () => {
  const { clock, net, call, traffic, key } = setup({ breaker: { enabled: false } }, 1);
  for (let i = 0; i < 5; i++) traffic.record(key('e0'), 0);
  assert.equal(traffic.outlier?.isEjected(key('e0')), true);
  const k = call();
  k.start();
  clock.advance(1);
  assert.deepEqual(net.answer, { status: 200, from: 'e0' });
  assert.match(k.explanation(), /; panic \(fewer instances available than the panic threshold: ejections and failed active checks ignored\)/);
  // Outside panic (threshold 0), the same state is an outage, and its answer says why.
  const off = setup({ breaker: { enabled: false }, panicThreshold: 0 }, 1);
  for (let i = 0; i < 5; i++) off.traffic.record(off.key('e0'), 0);
  const k2 = off.call();
  k2.start();
  const a = off.net.answer as unknown as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_NO_HEALTHY_ENDPOINT');
  assert.equal(a.failure.message, 'none of the 1 instances of "svc" may take requests now: 1 ejected by outlier detection');
  assert.equal(a.failure.details.panic, false);
  assert.doesNotMatch(k2.explanation(), /panic/);
});

test('the deadline: the route\'s timeout outbound, the caller\'s remaining deadline either way, the smaller; a spent one is refused', () => {
  const { traffic } = setup({ timeouts: { request: '2s' } });
  const route = traffic.routes.match({ method: 'GET', path: '/', header: () => undefined });
  assert.equal(deadlineOf(route, 'outbound', 'svc', -1), 2000);
  assert.equal(deadlineOf(route, 'outbound', 'svc', 500), 500);
  assert.equal(deadlineOf(route, 'outbound', 'svc', 5000), 2000);
  assert.equal(deadlineOf(route, 'inbound', 'svc', -1), 0, 'inbound: no timeout of its own');
  assert.equal(deadlineOf(route, 'inbound', 'svc', 5000), 5000);
  assert.deepEqual(deadlineOf(route, 'inbound', 'svc', 0), { code: 'SKEIN_E_DEADLINE_EXCEEDED', message: 'the request\'s deadline was spent before it reached the inbound proxy of "svc"' });
  const off = setup({ timeouts: { request: '0s' } });
  const r0 = off.traffic.routes.match({ method: 'GET', path: '/', header: () => undefined });
  assert.equal(deadlineOf(r0, 'outbound', 'svc', -1), 0, 'request timeout "0s": none');
  assert.equal(deadlineOf(r0, 'outbound', 'svc', 300), 300);
});

test('whom a request counts against: the workload outbound; inbound the caller\'s proxy\'s word, else the client address', () => {
  assert.equal(callerOf('outbound', 'web-1', 'spoofed', '127.0.0.1'), 'web-1');
  assert.equal(callerOf('inbound', 'api-1', 'web', '127.0.0.1'), 'web');
  assert.equal(callerOf('inbound', 'api-1', null, '10.0.0.7'), '10.0.0.7');
});

test('cold start: a service with no instance and a coldStart policy holds the call, asks once to be woken, and sends it when an instance arrives', () => {
  const { clock, client, net, call, events, traffic } = setup({ coldStart: { queue: 2, timeout: '5s' } }, 0);
  const k = call();
  k.start();
  assert.equal(net.answer, null, 'held, not failed');
  assert.equal(client.held, 1);
  assert.equal(traffic.active, 1, 'a held call is in flight (the autoscaler sees it)');
  const k2 = call();
  k2.start();
  assert.deepEqual(events, ['cold-start '], 'one wake for both (asked again only after WAKE_AGAIN_MS)');
  // The queue holds two: the third is refused at once, with the numbers.
  const third = call();
  third.start();
  const full = net.answer as unknown as { failure: CallFailure };
  assert.equal(full.failure.code, 'SKEIN_E_COLD_START_QUEUE_FULL');
  assert.equal(full.failure.status, 503);
  assert.deepEqual(full.failure.details.coldStart, { queue: 2, waiting: 2 });
  net.answer = null;
  clock.advance(1200);
  client.update(setOf(1));
  assert.equal(client.held, 0);
  assert.deepEqual(net.log.slice(-2), ['send e0', 'send e0'], 'both go out');
  assert.equal(net.sent.length, 2);
  assert.match(k.explanation(), /endpoint=e0 .*; held=1200ms \(the service was scaled to zero: waited for an instance to start\)$/);
  assert.match(k2.explanation(), /endpoint=e0 .*; held=1200ms/);
});

test('cold start: a held call times out with its own error, or with the request deadline when that is first; a client that leaves frees its place', () => {
  const a = setup({ coldStart: { timeout: '2s' }, timeouts: { request: '10s' } }, 0);
  const k = a.call();
  k.start();
  a.clock.advance(1999);
  assert.equal(a.net.answer, null);
  a.clock.advance(1);
  const f = (a.net.answer as unknown as { failure: CallFailure }).failure;
  assert.equal(f.code, 'SKEIN_E_COLD_START_TIMEOUT');
  assert.equal(f.message, 'service "svc" is scaled to zero and no instance of it became ready within 2000 ms (coldStart.timeout) while the request was held');
  assert.deepEqual(f.details.coldStart, { heldMs: 2000 });
  assert.equal(a.client.held, 0);
  assert.equal(a.traffic.active, 0);

  const b = setup({ coldStart: { timeout: '30s' }, timeouts: { request: '1s' } }, 0);
  b.call().start();
  b.clock.advance(1000);
  const g = (b.net.answer as unknown as { failure: CallFailure }).failure;
  assert.equal(g.code, 'SKEIN_E_UPSTREAM_TIMEOUT');
  assert.match(g.message, /within 1000 ms \(it is scaled to zero: the request waited for an instance to start, and none became ready in time\)$/);

  const c = setup({ coldStart: { queue: 1 } }, 0);
  const gone = c.call();
  gone.start();
  gone.clientGone();
  assert.equal(c.client.held, 0, 'its place is free');
  c.call().start();
  assert.equal(c.client.held, 1);
  assert.equal(c.net.answer, null);
});

test('cold start: without the policy, or with instances that are only unavailable, nothing is held', () => {
  const off = setup({}, 0);
  off.call().start();
  assert.equal((off.net.answer as unknown as { failure: CallFailure }).failure.code, 'SKEIN_E_NO_HEALTHY_ENDPOINT');
  const ejected = setup({ coldStart: {}, breaker: { enabled: false }, panicThreshold: 0 }, 1);
  for (let i = 0; i < 5; i++) ejected.traffic.record(ejected.key('e0'), 0);
  ejected.call().start();
  assert.equal((ejected.net.answer as unknown as { failure: CallFailure }).failure.code, 'SKEIN_E_NO_HEALTHY_ENDPOINT');
  assert.equal(ejected.client.held, 0);
  // The policy removed while calls are held: they go ahead and fail at once, without waiting out their timeout.
  const held = setup({ coldStart: {} }, 0);
  held.call().start();
  held.client.setDefinition(parseService({ name: 'svc' }));
  assert.equal((held.net.answer as unknown as { failure: CallFailure }).failure.code, 'SKEIN_E_NO_HEALTHY_ENDPOINT');
});

test('a call reused for the next request arms no clock timer while the new deadline is later: the armed one fires, is armed again for the rest, and the deadline holds to the ms', () => {
  const { clock, net, call, client } = setup({ timeouts: { request: '250ms' } });
  const others = clock.pending; // the service's own timers
  const k = call();
  k.start();
  clock.advance(1);
  assert.deepEqual(net.answer, { status: 200, from: net.sent[0]?.endpoint.id });
  assert.equal(clock.pending - others, 1, 'the first deadline timer stays armed after the call (lazy), for t0 + 250');
  clock.advance(99);
  net.answer = null;
  net.plan.set('e0', [{ kind: 'hang' }]);
  net.plan.set('e1', [{ kind: 'hang' }]);
  const route = client.traffic.routes.match({ method: 'GET', path: '/', header: () => undefined }) as RoutePolicy;
  const req: CallRequest = { direction: 'outbound', route, idempotent: true, hasBody: false, upgrade: false, timeoutMs: 250, delayMs: 0, hash: { header: () => undefined, sourceAddress: '127.0.0.1' }, hop: null };
  assert.equal(k.reuse(client, req), true);
  assert.equal(k.done, false);
  k.start();
  clock.advance(1); // the hanging endpoint connects
  assert.equal(clock.pending - others, 1, 'no second clock timer: the one armed for t0 + 250 covers the new deadline (t0 + 350) until it fires');
  clock.advance(248);
  assert.equal(net.answer, null, 'the old timer fired at t0 + 250 and was armed again for the new deadline');
  assert.equal(clock.pending - others, 1);
  clock.advance(1);
  const a = net.answer as unknown as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_TIMEOUT', 'the second request times out at exactly its own deadline');
  assert.match(a.failure.message, /^no response from "svc" within 250 ms/);
  assert.equal(k.attempts, 1, 'the reused call counts its own attempts only');
});

test('a reused call whose deadline is earlier than the armed timer re-arms it; reuse is refused until the call is done; dispose cancels the timer', () => {
  const { clock, net, call, client } = setup({ timeouts: { request: '1s' } });
  const others = clock.pending; // the service's own timers
  const k = call();
  net.plan.set('e0', [{ kind: 'hang' }]);
  net.plan.set('e1', [{ kind: 'hang' }]);
  k.start();
  const route = client.traffic.routes.match({ method: 'GET', path: '/', header: () => undefined }) as RoutePolicy;
  const req: CallRequest = { direction: 'outbound', route, idempotent: true, hasBody: false, upgrade: false, timeoutMs: 100, delayMs: 0, hash: { header: () => undefined, sourceAddress: '127.0.0.1' }, hop: null };
  assert.equal(k.reuse(client, req), false, 'a call in progress is not reused');
  clock.advance(1000);
  assert.equal((net.answer as unknown as { failure: CallFailure }).failure.code, 'SKEIN_E_UPSTREAM_TIMEOUT');
  net.answer = null;
  assert.equal(k.reuse(client, req), true);
  k.start();
  clock.advance(100);
  const a = net.answer as unknown as { failure: CallFailure };
  assert.equal(a.failure.message.startsWith('no response from "svc" within 100 ms'), true, a.failure.message);
  // Done with a timer armed? The 100 ms one fired; start a third request and dispose mid-way.
  assert.equal(k.reuse(client, { ...req, timeoutMs: 5000 }), true);
  net.plan.set('e0', [{ kind: 'status', status: 200 }]);
  net.plan.set('e1', [{ kind: 'status', status: 200 }]);
  k.start();
  clock.advance(1);
  assert.equal(clock.pending - others, 1, 'the 5 s deadline timer, lazily left armed after the response');
  k.dispose();
  assert.equal(clock.pending - others, 0, 'dispose cancels it (the connection is gone)');
});

test('the request is deposited in the retry budget once, however many attempts it takes', () => {
  // ratio 1: each deposit adds a whole retry; the floor (1/s over 10 s) makes 10 to start with.
  const { clock, net, call, c, traffic } = setup({ retries: { maxRetries: 2, budget: { ratio: 1, minRetriesPerSecond: 1, window: '10s' } } });
  net.plan.set('e0', [{ kind: 'reset' }]);
  net.plan.set('e1', [{ kind: 'reset' }]);
  const before = traffic.budget.available;
  assert.equal(before, 10);
  const k = call();
  k.start();
  clock.advance(2000);
  assert.equal(k.attempts, 3, 'the first attempt and two retries');
  assert.deepEqual(c.retries, ['reset', 'reset']);
  // One deposit (+1), two withdrawals (-2): a deposit per attempt would leave 11.
  assert.equal(traffic.budget.available, before + 1 - 2);
});

test('budget exhausted mid-request: a budget of exactly one retry lets the first through and refuses the second, and the failure says so', () => {
  // No ratio, a floor of 0.1 retry/s over 10 s: exactly one retry in the window.
  const { clock, net, call, c, traffic } = setup({ retries: { maxRetries: 2, budget: { ratio: 0, minRetriesPerSecond: 0.1, window: '10s' } } });
  assert.equal(traffic.budget.available, 1);
  net.plan.set('e0', [{ kind: 'refuse' }]);
  net.plan.set('e1', [{ kind: 'refuse' }]);
  const k = call();
  k.start();
  clock.advance(1000);
  assert.equal(net.sent.length, 2, 'the first attempt and the one retry the budget had');
  assert.deepEqual(c.retries, ['connect-failure'], 'one retry made');
  assert.equal(c.exhausted, 1, 'the second retry was refused by the budget');
  const a = net.answer as { failure: CallFailure };
  assert.equal(a.failure.code, 'SKEIN_E_UPSTREAM_CONNECT');
  assert.equal(a.failure.status, 502);
  assert.equal(a.failure.details.retries, 1);
  assert.equal((a.failure.details.tried as unknown[]).length, 2);
  assert.deepEqual(a.failure.details.budget, { available: 0, refusedARetry: true });
  assert.match(a.failure.explanation, /; attempts=2; failed=e\d: connect failed: ECONNREFUSED, e\d: connect failed: ECONNREFUSED; budget=0 \(a retry was refused by the budget\);/);
  assert.equal(traffic.budget.exhausted, 1);
});

/**
 * An opaque stream's driver (TCP): attempt by attempt, refuse the connect, hang, connect after `ms`,
 * or connect to a peer proxy that refuses the stream (its app down: `peer-down`; its policy: `denied`).
 */
class StreamNet implements CallDriver {
  readonly log: string[] = [];
  call!: Call;
  private pending: { cancel(): void } | null = null;
  constructor(
    private readonly clock: ManualClock,
    private readonly plan: Array<'refuse' | 'hang' | 'peer-down' | 'denied' | number>,
  ) {}
  send(a: Attempt): Refusal | null {
    this.log.push(`connect ${a.endpoint.id}`);
    const p = this.plan.shift() ?? 1;
    if (p === 'hang') return null;
    this.pending = this.clock.setTimeout(() => {
      this.pending = null;
      if (p === 'refuse') return this.call.connectFailed('ECONNREFUSED');
      this.call.connected();
      if (p === 'peer-down') return this.call.streamRefused('SKEIN_E_UPSTREAM_CONNECT', 'its app is down', true);
      if (p === 'denied') return this.call.streamRefused('SKEIN_E_AUTHZ_DENIED', 'policy no-web denies it', false);
      this.log.push(`established ${a.endpoint.id} ${this.call.established()}`);
    }, typeof p === 'number' ? p : 1);
    return null;
  }
  abandon(): void {
    this.log.push('abandon');
    this.pending?.cancel();
  }
  fail(f: CallFailure): void {
    this.log.push(`fail ${f.code}`);
  }
}

test('an opaque stream: a refused connect is retried on the other endpoint; the established connection is the answer, a success for its endpoint, and nothing after it retries', () => {
  const { clock, client, key, traffic } = setup({ breaker: { consecutiveFailures: 1 }, timeouts: { perTry: '50ms' } });
  const net = new StreamNet(clock, ['refuse', 7]);
  const k = new Call(client, { direction: 'outbound', route: client.traffic.routes.fallback, idempotent: true, hasBody: false, upgrade: false, timeoutMs: 0, delayMs: 0, hash: { header: () => undefined, sourceAddress: '127.0.0.1' }, hop: null }, net, clock, { retry: () => undefined, retryBudgetExhausted: () => undefined }, () => 0);
  net.call = k;
  k.start();
  clock.advance(8);
  const [first, second] = net.log.map((l) => l.split(' ')[1] as string);
  assert.notEqual(first, second);
  assert.deepEqual(net.log, [`connect ${first}`, `connect ${second}`, `established ${second} true`]);
  assert.equal(traffic.breakers?.state(key(first as string)), 'open', 'the refused connect is evidence against its endpoint');
  assert.equal(traffic.breakers?.state(key(second as string)), 'closed', 'the established stream counts as a success');
  assert.equal(k.responding, true);
  assert.equal(k.latencyMs, 7, "the balancer's sample is the time to connect");
  assert.equal(k.status, 200);
  // The per-try timeout (50 ms) was the connect's: it no longer runs once the stream is up.
  clock.advance(1000);
  assert.equal(net.log.includes('abandon'), false);
  k.connectFailed('late');
  assert.equal(k.responding, true, 'a failure reported after the stream is up is not a retry');
  assert.equal(traffic.active, 1, 'the stream is in flight until it closes');
  k.responseComplete();
  assert.equal(k.done, true);
  assert.equal(traffic.active, 0);
});

test("an opaque stream refused by its peer proxy: an app that is down is a mesh failure retried on the other endpoint (refused-stream); a policy's refusal is the answer, not retried", () => {
  const { clock, client, key, traffic } = setup({ breaker: { consecutiveFailures: 1 } });
  const retries: string[] = [];
  const req = { direction: 'outbound', route: client.traffic.routes.fallback, idempotent: true, hasBody: false, upgrade: false, timeoutMs: 0, delayMs: 0, hash: { header: () => undefined, sourceAddress: '127.0.0.1' }, hop: null } as const;
  const counters = { retry: (_s: string, reason: string) => void retries.push(reason), retryBudgetExhausted: () => undefined };
  const net = new StreamNet(clock, ['peer-down', 4]);
  const k = new Call(client, req, net, clock, counters, () => 0);
  net.call = k;
  k.start();
  clock.advance(10);
  const [first, second] = net.log.map((l) => l.split(' ')[1] as string);
  assert.deepEqual(net.log, [`connect ${first}`, `connect ${second}`, `established ${second} true`]);
  assert.deepEqual(retries, ['refused-stream']);
  assert.equal(traffic.breakers?.state(key(first as string)), 'open', "the peer's refusal is evidence against its endpoint");
  k.responseComplete();

  const denied = new StreamNet(clock, ['denied']);
  const d = new Call(client, req, denied, clock, counters, () => 0);
  denied.call = d;
  d.start();
  clock.advance(2);
  const [only] = denied.log.map((l) => l.split(' ')[1] as string);
  assert.deepEqual(denied.log, [`connect ${only}`, 'fail SKEIN_E_AUTHZ_DENIED']);
  assert.deepEqual(retries, ['refused-stream'], 'not retried');
  assert.equal(traffic.breakers?.state(key(only as string)), 'closed', "a policy's answer is not a failure of the endpoint");
});

test('an opaque stream whose connect hangs: the per-try timeout abandons it and the other endpoint gets the connection; established() after the call is over says false', () => {
  const { clock, client } = setup({ timeouts: { perTry: '50ms' }, retries: { maxRetries: 1 } });
  const net = new StreamNet(clock, ['hang', 'hang']);
  const k = new Call(client, { direction: 'outbound', route: client.traffic.routes.fallback, idempotent: true, hasBody: false, upgrade: false, timeoutMs: 0, delayMs: 0, hash: { header: () => undefined, sourceAddress: '127.0.0.1' }, hop: null }, net, clock, { retry: () => undefined, retryBudgetExhausted: () => undefined }, () => 0);
  net.call = k;
  k.start();
  clock.advance(50);
  assert.deepEqual(net.log.slice(0, 3), [net.log[0], 'abandon', net.log[2]]);
  assert.notEqual(net.log[0], net.log[2], 'the retry goes to the other endpoint');
  clock.advance(50);
  assert.equal(net.log.at(-1), 'fail SKEIN_E_UPSTREAM_TIMEOUT');
  assert.equal(k.established(), false);
});
