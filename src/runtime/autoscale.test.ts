import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AUTOSCALE_DEFAULTS, buildAutoscale, type MeshAutoscale, type RawAutoscale } from '../api/mesh/autoscale.js';
import { MAX_REPLICAS } from '../api/mesh/schema.js';
import { ManualClock } from '../core/clock.js';
import { Autoscaler, type AutoscaleHost, type MetricReading } from './autoscale.js';

function policy(raw: Partial<RawAutoscale>): MeshAutoscale {
  const p = buildAutoscale({ max: 6, target: { rps: 100 }, ...raw }, (f, m) => assert.fail(`${f} ${m}`), MAX_REPLICAS);
  return p as MeshAutoscale;
}

/** A service runtime as the autoscaler sees it: replicas asked for become ready at once. */
class FakeRuntime implements AutoscaleHost {
  readonly service = 'web';
  replicas: number;
  rollout = false;
  scaled: number[] = [];
  constructor(
    public policy: MeshAutoscale | undefined,
    replicas: number,
  ) {
    this.replicas = replicas;
  }
  autoscale() {
    return this.policy;
  }
  desired() {
    return this.replicas;
  }
  currentReady() {
    return this.replicas;
  }
  rolloutActive() {
    return this.rollout;
  }
  async scale(n: number) {
    this.scaled.push(n);
    this.replicas = n;
  }
}

function setup(p: MeshAutoscale | undefined, replicas = 1) {
  const clock = new ManualClock();
  const rt = new FakeRuntime(p, replicas);
  let reading: MetricReading = { value: 0 };
  const reads: Array<{ service: string; metric: string; windowMs: number }> = [];
  const events: Array<{ message: string; [k: string]: unknown }> = [];
  const a = new Autoscaler({
    host: rt,
    clock,
    signals: {
      read: async (service, metric, windowMs) => {
        reads.push({ service, metric, windowMs });
        return reading;
      },
    },
    event: (message, fields) => events.push({ message, ...fields }),
  });
  const set = (r: MetricReading) => {
    reading = r;
  };
  /** Moves the clock one interval at a time and lets each tick finish. */
  const run = async (ms: number, step: number) => {
    for (let t = 0; t < ms; t += step) {
      clock.advance(step);
      await new Promise((r) => setImmediate(r));
    }
  };
  return { clock, rt, a, set, reads, events, run };
}

test('the controller ticks on its Clock, scales the runtime and says why in one event per change', async () => {
  const p = policy({ interval: '1s', window: '3s', scaleDown: { stabilization: '20s' } });
  const { rt, a, set, reads, events, run } = setup(p, 1);
  a.start();
  set({ value: 50 });
  await run(3000, 1000);
  assert.deepEqual(rt.scaled, [], 'half the target on one replica: min is 1, and the seed holds');
  assert.deepEqual(reads[0], { service: 'web', metric: 'rps', windowMs: 3000 });
  assert.equal(reads.length, 3, 'one read per interval');

  set({ value: 500 });
  await run(1000, 1000);
  assert.deepEqual(rt.scaled, [5]);
  const e = events.at(-1)!;
  assert.equal(e['change'], 'autoscale');
  assert.equal(e.message, 'web autoscaled from 1 to 5 replicas: rps 500 per replica, target rps 100 per replica, 1 ready');
  assert.deepEqual(
    { metric: e['metric'], value: e['value'], target: e['target'], current: e['current'], ready: e['ready'], recommendation: e['recommendation'], desired: e['desired'], limitedBy: e['limitedBy'] },
    { metric: 'rps', value: 500, target: 100, current: 1, ready: 1, recommendation: 5, desired: 5, limitedBy: null },
  );
  assert.equal(a.view()?.last?.desired, 5);

  // Load drops: held by the stabilization window (one held-back event, not one per tick), then down.
  set({ value: 100 });
  const before = events.length;
  await run(19_000, 1000);
  assert.deepEqual(rt.scaled, [5], 'no scale-down within 20 s of the recommendation of 5');
  const held = events.slice(before);
  assert.equal(held.length, 1, `one held-back event per reason per window: ${JSON.stringify(held)}`);
  assert.equal(held[0]!['change'], 'autoscale-held');
  assert.equal(held[0]!['reason'], 'stabilization');
  assert.equal(held[0]!.message, 'web stays at 5 replicas (wants 1): rps 20 per replica, target rps 100 per replica, 5 ready; held by the scale-down stabilization window');
  await run(2000, 1000);
  assert.deepEqual(rt.scaled, [5, 1]);
  a.stop();
});

test('frozen during a rollout: no read, no scale, one event; it resumes after', async () => {
  const p = policy({ interval: '1s', window: '3s', scaleDown: { stabilization: '10s' } });
  const { rt, a, set, reads, events, run } = setup(p, 2);
  a.start();
  rt.rollout = true;
  set({ value: 1000 });
  await run(5000, 1000);
  assert.deepEqual(rt.scaled, []);
  assert.equal(reads.length, 0);
  assert.equal(events.length, 1);
  assert.equal(events[0]!['reason'], 'frozen');
  assert.equal(events[0]!.message, 'web stays at 2 replicas: rps not read, target rps 100 per replica, 2 ready; frozen: a rollout is in progress');
  assert.equal(a.view()?.frozen, true);
  rt.rollout = false;
  await run(1000, 1000);
  assert.deepEqual(rt.scaled, [6], 'ceil(1000 / 100) = 10, max(2 + 4, 4) = 6 by the rate, and max 6');
  a.stop();
});

test('a missing metric never scales down, and says why once', async () => {
  const p = policy({ interval: '1s', scaleDown: { stabilization: '0s' }, scaleUp: { period: '5s' } });
  const { rt, a, set, events, run } = setup(p, 4);
  a.start();
  set({ value: null, why: 'GET /v1/signals/services/web/versions?last=15000ms: fetch failed' });
  await run(4000, 1000);
  assert.deepEqual(rt.scaled, []);
  assert.equal(events.length, 1);
  assert.equal(events[0]!['reason'], 'no-metric');
  assert.equal(events[0]!['detail'], 'GET /v1/signals/services/web/versions?last=15000ms: fetch failed');
  // 5 s later (the quiet window is max(stabilization 0s, period 5s)) it may say so again.
  await run(2000, 1000);
  assert.equal(events.length, 2);
  a.stop();
});

test('at max: the held-back event names max; an apply that removes autoscale stops deciding', async () => {
  const p = policy({ interval: '1s', max: 3, scaleDown: { stabilization: '30s' } });
  const { rt, a, set, events, run } = setup(p, 3);
  a.start();
  set({ value: 900 });
  await run(3000, 1000);
  assert.deepEqual(rt.scaled, []);
  assert.equal(events.length, 1);
  assert.equal(events[0]!['reason'], 'max');
  assert.equal(events[0]!['recommendation'], 9);
  rt.policy = undefined;
  await run(2000, 1000);
  assert.equal(a.view(), null);
  assert.equal(events.length, 1);
  a.stop();
});

test('scale to zero: only after coolDown with no request at all (never on a missing reading), then asleep until a wake starts one replica', async () => {
  const p = policy({ min: 0, interval: '1s', window: '2s', coolDown: '10s', scaleDown: { stabilization: '2s' } });
  const { rt, a, set, reads, events, run } = setup(p, 2);
  a.start();
  // Quiet traffic, under one replica's worth: the HPA goes down to 1, never to 0.
  set({ value: 5 });
  await run(9000, 1000);
  assert.deepEqual(rt.scaled, [1], 'the HPA floor is 1 with min 0');
  assert.equal(reads.some((r) => r.windowMs === 10_000), false, 'no idle check before coolDown has passed since the start');
  // No request at all, but the reading is missing: no scale to zero.
  set({ value: null, why: 'fetch failed' });
  await run(3000, 1000);
  assert.deepEqual(rt.scaled, [1]);
  set({ value: 0 });
  await run(1000, 1000);
  assert.deepEqual(rt.scaled, [1, 0]);
  assert.deepEqual(
    reads.slice(-2).map((r) => [r.metric, r.windowMs]),
    [
      ['rps', 10_000],
      ['inFlight', 10_000],
    ],
    'idle means no request over the whole cool-down',
  );
  const z = events.at(-1)!;
  assert.equal(z.message, 'web scaled to zero from 1 replicas: no request for 10s (autoscale.coolDown); the next request wakes it');
  assert.deepEqual([z['change'], z['reason'], z['desired']], ['autoscale', 'idle', 0]);
  // Asleep: ticks read nothing and say nothing.
  const n = reads.length;
  const e = events.length;
  await run(5000, 1000);
  assert.equal(reads.length, n);
  assert.equal(events.length, e);
  // A held request wakes it: one replica at once, and not put back to sleep before another cool-down.
  assert.equal(a.wake(), true);
  assert.equal(a.wake(), false, 'already awake');
  assert.deepEqual(rt.scaled, [1, 0, 1]);
  assert.equal(events.at(-1)!.message, "web woken from zero to 1 replica: a caller's proxy holds requests for it");
  assert.equal(events.at(-1)!['reason'], 'wake');
  await run(9000, 1000);
  assert.deepEqual(rt.scaled, [1, 0, 1], 'no scale to zero within coolDown of the wake');
  await run(1000, 1000);
  assert.deepEqual(rt.scaled, [1, 0, 1, 0]);
  a.stop();
});

test('wake does nothing for a service that is not scaled to zero, or has min 1', () => {
  const one = setup(policy({ min: 1 }), 0);
  assert.equal(one.a.wake(), false);
  const up = setup(policy({ min: 0 }), 2);
  assert.equal(up.a.wake(), false);
  const none = setup(undefined, 0);
  assert.equal(none.a.wake(), false);
  assert.deepEqual([one.rt.scaled, up.rt.scaled, none.rt.scaled], [[], [], []]);
});

test('a service not autoscaled is looked at every AUTOSCALE_DEFAULTS.intervalMs: autoscaling turned on by an apply starts on the next look', async () => {
  const { rt, a, set, reads, run } = setup(undefined, 1);
  a.start();
  set({ value: 500 });
  await run(AUTOSCALE_DEFAULTS.intervalMs, 100);
  assert.equal(reads.length, 0, 'nothing to read while not autoscaled');
  rt.policy = policy({ interval: '1s', window: '3s' });
  await run(AUTOSCALE_DEFAULTS.intervalMs - 100, 100);
  assert.equal(reads.length, 0, 'the next look is one default interval after the last');
  await run(100, 100);
  assert.equal(reads.length, 1, 'read at the default interval');
  a.stop();
});
