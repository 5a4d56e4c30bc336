/**
 * The engine's gRPC decisions without sockets: a grpc-status in a Trailers-Only head is the
 * attempt's outcome (UNAVAILABLE retried by default whatever the method, other codes only when
 * the route names them); a status in the trailers is the outcome of a delivered response, for the
 * breakers and the failure class, never a retry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import type { RoutePolicy } from '../api/traffic.js';
import { setOf } from '../balance/test-helpers.js';
import { ManualClock } from '../core/clock.js';
import { Call, type Attempt, type CallDriver, type CallFailure, type CallRequest } from './call.js';
import { GRPC, grpcAsHttp, grpcRetryCondition } from './grpc.js';
import { ServiceClient } from './service-client.js';

/** What each endpoint answers: a Trailers-Only grpc-status, or a 200 head and the status in its trailers. */
type Answer = { readonly only: number } | { readonly trailers: number } | { readonly cut: true };

class Grpc implements CallDriver {
  readonly log: string[] = [];
  call!: Call;
  failure: CallFailure | null = null;
  constructor(
    private readonly clock: ManualClock,
    readonly plan: Map<string, Answer[]>,
  ) {}
  send(a: Attempt) {
    const list = this.plan.get(a.endpoint.id) ?? [{ only: GRPC.OK }];
    const ans = (list.length > 1 ? list.shift() : list[0]) as Answer;
    this.clock.setTimeout(() => {
      const call = this.call;
      call.connected();
      const v = call.responseHead(200, false, 'only' in ans ? ans.only : -1);
      this.log.push(`${a.endpoint.id} ${'only' in ans ? `only ${ans.only}` : 'trailers' in ans ? `trailers ${ans.trailers}` : 'cut'} ${v}`);
      if (v === 'discard') call.discarded();
      else if ('cut' in ans) call.reset('reset', 'the upstream stream closed', false, true);
      else call.responseComplete('only' in ans ? ans.only : ans.trailers);
    }, 1);
    return null;
  }
  abandon() {}
  fail(f: CallFailure) {
    this.failure = f;
  }
}

function setup(policy: object = {}, n = 2) {
  const clock = new ManualClock();
  const client = new ServiceClient('svc', parseService({ name: 'svc', balancer: { kind: 'round-robin' }, ...policy }), setOf(n), clock, () => undefined, null);
  const route = client.traffic.routes.match({ method: 'POST', path: '/pkg.Svc/Do', header: () => undefined }) as RoutePolicy;
  const retries: string[] = [];
  const counters = { retry: (_s: string, r: string) => void retries.push(r), retryBudgetExhausted: () => undefined };
  const plan = new Map<string, Answer[]>();
  const net = new Grpc(clock, plan);
  const call = () => {
    const req: CallRequest = { direction: 'outbound', route, idempotent: false, hasBody: true, upgrade: false, timeoutMs: 0, delayMs: 0, hash: { header: () => undefined, sourceAddress: '127.0.0.1' }, hop: null, grpc: true };
    const k = new Call(client, req, net, clock, counters, () => 0);
    net.call = k;
    k.requestComplete();
    return k;
  };
  const key = (id: string) => client.balancer.set.list().find((e) => e.id === id)?.key as string;
  return { clock, client, net, plan, call, retries, key };
}

test('the gRPC statuses stand for HTTP statuses: the 5xx ones are failures of the instance', () => {
  assert.equal(grpcAsHttp(GRPC.OK), 200);
  assert.equal(grpcAsHttp(GRPC.NOT_FOUND), 404);
  assert.equal(grpcAsHttp(GRPC.UNAVAILABLE), 503);
  assert.equal(grpcAsHttp(GRPC.DEADLINE_EXCEEDED), 504);
  assert.equal(grpcAsHttp(GRPC.UNIMPLEMENTED), 501);
  assert.equal(grpcAsHttp(GRPC.RESOURCE_EXHAUSTED), 429);
  assert.equal(grpcAsHttp(17), 500, 'an unknown code is a malformed answer');
  assert.equal(grpcAsHttp(-1), 500, 'no grpc-status where one was due');
  assert.equal(grpcRetryCondition(GRPC.UNAVAILABLE), 'unavailable');
  assert.equal(grpcRetryCondition(GRPC.NOT_FOUND), null);
});

/** The log without endpoint ids (round robin starts anywhere), and whether attempts 1 and 2 went to different instances. */
const shape = (log: string[]) => ({ log: log.map((l) => l.replace(/^e\d /, '')), spread: log.length < 2 || log[0]?.slice(0, 2) !== log[1]?.slice(0, 2) });

test('a Trailers-Only UNAVAILABLE is retried by default on another instance, although gRPC is POST', () => {
  const { clock, net, plan, call, retries } = setup();
  // Each instance answers UNAVAILABLE once, then OK.
  plan.set('e0', [{ only: GRPC.UNAVAILABLE }, { only: GRPC.OK }]);
  plan.set('e1', [{ only: GRPC.UNAVAILABLE }, { only: GRPC.OK }]);
  const k = call();
  k.start();
  for (let i = 0; i < 3; i++) clock.advance(1);
  assert.deepEqual(shape(net.log), { log: ['only 14 discard', 'only 14 discard', 'only 0 deliver'], spread: true });
  assert.deepEqual(retries, ['unavailable', 'unavailable']);
  assert.equal(k.done, true);
  assert.equal(k.outcomeStatus, 200);
});

test('other gRPC codes are retried only when the route names them', () => {
  {
    const { clock, net, plan, call, retries } = setup();
    plan.set('e0', [{ only: GRPC.INTERNAL }]);
    plan.set('e1', [{ only: GRPC.INTERNAL }]);
    const k = call();
    k.start();
    clock.advance(1);
    assert.deepEqual(shape(net.log).log, ['only 13 deliver'], 'INTERNAL is not retried by default');
    assert.deepEqual(retries, []);
    assert.equal(k.outcomeStatus, 500, 'and counts as a failure');
  }
  {
    const { clock, net, plan, call, retries } = setup({ retries: { on: ['internal'] } });
    plan.set('e0', [{ only: GRPC.INTERNAL }, { only: GRPC.OK }]);
    plan.set('e1', [{ only: GRPC.INTERNAL }, { only: GRPC.OK }]);
    const k = call();
    k.start();
    for (let i = 0; i < 3; i++) clock.advance(1);
    assert.deepEqual(shape(net.log), { log: ['only 13 discard', 'only 13 discard', 'only 0 deliver'], spread: true });
    assert.deepEqual(retries, ['internal', 'internal']);
  }
});

test('a status in the trailers is the outcome of a delivered response: the breaker counts it, nothing is retried', () => {
  const { clock, net, plan, call, client, key, retries } = setup({ outlierDetection: { enabled: false }, breaker: { consecutiveFailures: 2 } }, 1);
  plan.set('e0', [{ trailers: GRPC.UNAVAILABLE }]);
  for (let i = 0; i < 2; i++) {
    const k = call();
    k.start();
    clock.advance(1);
    assert.equal(k.outcomeStatus, 503);
  }
  assert.deepEqual(net.log, ['e0 trailers 14 deliver', 'e0 trailers 14 deliver']);
  assert.deepEqual(retries, [], 'the response was under way: no retry');
  assert.equal(client.traffic.breakers?.state(key('e0')), 'open', 'two UNAVAILABLE in a row opened the breaker');
  const k = call();
  k.start();
  assert.equal(net.failure?.code, 'SKEIN_E_BREAKER_OPEN');
  assert.equal(k.done, true);
});

test('a response cut after its head, before the trailers with its status: a failure of the instance (its breaker counts it; a half-open probe is not left waiting)', () => {
  const { clock, net, plan, call, client, key, retries } = setup({ outlierDetection: { enabled: false }, breaker: { consecutiveFailures: 2 } }, 1);
  plan.set('e0', [{ cut: true }]);
  for (let i = 0; i < 2; i++) {
    const k = call();
    k.start();
    clock.advance(1);
    assert.equal(k.done, true);
  }
  assert.deepEqual(net.log, ['e0 cut deliver', 'e0 cut deliver']);
  assert.deepEqual(retries, [], 'the response was under way: no retry');
  assert.equal(client.traffic.breakers?.state(key('e0')), 'open', 'two cut responses in a row opened the breaker');
});

test('an OK in the trailers keeps the breaker closed', () => {
  const { clock, plan, call, client, key } = setup({ breaker: { consecutiveFailures: 1 } }, 1);
  plan.set('e0', [{ trailers: GRPC.OK }]);
  const k = call();
  k.start();
  clock.advance(1);
  assert.equal(k.outcomeStatus, 200);
  assert.equal(client.traffic.breakers?.state(key('e0')), 'closed');
});
