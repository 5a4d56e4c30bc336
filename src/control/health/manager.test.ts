import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CONTROL_DEFAULTS } from '../../api/control.js';
import { ManualClock } from '../../core/clock.js';
import { SkeinError, type ErrorCode } from '../../core/errors.js';
import { parseInstance } from '../../api/parse.js';
import type { HealthCheck, Instance } from '../../api/types.js';
import { MemoryStore } from '../store/store.js';
import { Registry, type HealthEvent } from '../registry/registry.js';
import { HealthManager, type HealthManagerOptions } from './manager.js';
import type { ProbeResult } from '../../discovery/probe.js';

const T0 = 1_700_000_000_000;

/** The I/O boundary: a probe whose outcome each test scripts per instance. */
class ScriptedProbe {
  readonly calls: Array<{ id: string; at: number; check: HealthCheck }> = [];
  /** Current outcome per instance id (default: pass). */
  readonly outcome = new Map<string, boolean>();
  /** When set, probes hang until `release` is called. */
  hold = false;
  private held: Array<() => void> = [];

  constructor(private readonly clock: ManualClock) {}

  readonly fn = (instance: Instance, check: HealthCheck): Promise<ProbeResult> => {
    this.calls.push({ id: instance.id, at: this.clock.now(), check });
    const n = this.calls.filter((c) => c.id === instance.id).length;
    const ok = this.outcome.get(instance.id) ?? true;
    const result = { ok, reason: `${ok ? 'pass' : 'fail'} #${n} of ${instance.id}` };
    if (!this.hold) return Promise.resolve(result);
    return new Promise((resolve) => this.held.push(() => resolve(result)));
  };

  release(): void {
    const h = this.held;
    this.held = [];
    for (const r of h) r();
  }

  count(id: string): number {
    return this.calls.filter((c) => c.id === id).length;
  }
}

/** Lets probe results and registry writes (promise callbacks) settle. */
const flush = () => new Promise<void>((r) => setImmediate(r));

async function setup(opts: Partial<HealthManagerOptions> = {}, store = new MemoryStore(), clock = new ManualClock(T0)) {
  const registry = await Registry.open({ clock, store });
  const healthEvents: HealthEvent[] = [];
  registry.onHealthEvent((e) => healthEvents.push(e));
  const probe = new ScriptedProbe(clock);
  const errors: unknown[] = [];
  const manager = new HealthManager({ registry, clock, probe: probe.fn, onError: (e) => errors.push(e), ...opts });
  manager.start();
  /**
   * Advances the clock in small steps, letting the async work each step starts finish (a probe's
   * next run is scheduled only once its result is in, as with real I/O).
   */
  const tick = async (ms: number) => {
    let left = ms;
    do {
      const step = Math.min(left, 100);
      clock.advance(step);
      left -= step;
      await flush();
    } while (left > 0);
  };
  return { registry, manager, probe, clock, store, tick, errors, healthEvents };
}

function inst(id: string, check: Record<string, unknown> | null, service = 'web'): Instance {
  return parseInstance({ id, service, address: '127.0.0.1', port: 8080, ...(check === null ? {} : { check }) });
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof SkeinError && e.code === code);
}

test('the first probe runs at once, then one per interval', async (t) => {
  const { registry, manager, probe, tick } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'http', interval: '10s' }));
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
  await tick(0);
  assert.deepEqual(probe.calls.map((c) => c.at), [T0]);
  assert.equal(registry.get('web', 'a')?.status, 'healthy', 'healthyThreshold 1: one pass is enough');
  assert.equal(registry.get('web', 'a')?.reason, 'pass #1 of a');
  await tick(9999);
  assert.equal(probe.count('a'), 1);
  await tick(1);
  await tick(10_000);
  assert.deepEqual(probe.calls.map((c) => c.at - T0), [0, 10_000, 20_000]);
  assert.equal(manager.probing, 1);
});

test('unhealthyThreshold consecutive failures flip to unhealthy, healthyThreshold passes flip back', async (t) => {
  const results: boolean[] = [];
  const { registry, manager, probe, tick, healthEvents } = await setup({ onResult: (_c, ok) => results.push(ok) });
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'http', interval: '1s', healthyThreshold: 2, unhealthyThreshold: 3 }));
  const status = () => registry.get('web', 'a')?.status;

  await tick(0); // pass 1
  assert.equal(status(), 'unhealthy', 'one pass of two');
  await tick(1000); // pass 2
  assert.equal(status(), 'healthy');
  assert.equal(registry.get('web', 'a')?.reason, 'pass #2 of a');

  probe.outcome.set('a', false);
  await tick(1000); // fail 1
  await tick(1000); // fail 2
  assert.equal(status(), 'healthy', 'two failures of three');
  probe.outcome.set('a', true);
  await tick(1000); // a pass resets the failure count
  probe.outcome.set('a', false);
  await tick(1000);
  await tick(1000);
  assert.equal(status(), 'healthy', 'failures must be consecutive');
  await tick(1000); // third consecutive failure
  assert.equal(status(), 'unhealthy');
  assert.equal(registry.get('web', 'a')?.reason, 'fail #8 of a');
  await tick(1000);
  assert.equal(registry.get('web', 'a')?.reason, 'fail #8 of a', 'staying unhealthy changes nothing');

  probe.outcome.set('a', true);
  await tick(1000);
  assert.equal(status(), 'unhealthy', 'one pass of two');
  await tick(1000);
  assert.equal(status(), 'healthy');

  const events = healthEvents.filter((e) => e.service === 'web');
  assert.deepEqual(
    events.map((e) => [e.from, e.to, e.reason, e.time - T0]),
    [
      ['new', 'unhealthy', 'initial state (http check)', 0],
      ['unhealthy', 'healthy', 'pass #2 of a', 1000],
      ['healthy', 'unhealthy', 'fail #8 of a', 7000],
      ['unhealthy', 'healthy', 'pass #11 of a', 10_000],
    ],
  );
  assert.equal(results.length, 11);
  assert.equal(results.filter((ok) => !ok).length, 6);
});

test('default thresholds: 3 failures to go unhealthy', async (t) => {
  const { registry, manager, probe, tick } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'tcp', interval: '1s', initialState: 'healthy' }));
  probe.outcome.set('a', false);
  await tick(0);
  await tick(1000);
  assert.equal(registry.get('web', 'a')?.status, 'healthy');
  await tick(1000);
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
  assert.equal(probe.calls[0]?.check.type, 'tcp');
});

test('a probe that throws counts as a failure with its message as the reason', async (t) => {
  const clock = new ManualClock(T0);
  const registry = await Registry.open({ clock, store: new MemoryStore() });
  const manager = new HealthManager({
    registry,
    clock,
    probe: () => Promise.reject(new Error('boom')),
  });
  manager.start();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'http', interval: '1s', unhealthyThreshold: 1, initialState: 'healthy' }));
  clock.advance(0);
  await flush();
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
  assert.equal(registry.get('web', 'a')?.reason, 'probe error: boom');
});

test('TTL: heartbeats keep it healthy; no heartbeat for ttl expires it; a heartbeat brings it back', async (t) => {
  const { registry, manager, probe, tick, healthEvents } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'ttl', ttl: '5s' }));
  const rec = () => registry.get('web', 'a');
  assert.equal(rec()?.status, 'healthy', 'registering counts as a heartbeat');
  assert.equal(manager.ttlTracked, 1);
  assert.equal(manager.ttlRemaining('web', 'a'), 5000);

  await tick(4000);
  await manager.heartbeat('web', 'a');
  assert.equal(manager.ttlRemaining('web', 'a'), 5000);
  await tick(4999); // 8999 after registration: past the first ttl, within the refreshed one
  assert.equal(rec()?.status, 'healthy');
  await tick(1);
  assert.equal(rec()?.status, 'unhealthy');
  assert.match(rec()?.reason ?? '', /^TTL expired: no heartbeat within 5000ms/);
  assert.equal(rec()?.since, T0 + 9000);

  const back = await manager.heartbeat('web', 'a');
  assert.equal(back.status, 'healthy');
  assert.equal(back.reason, 'heartbeat received');
  await tick(4000);
  assert.equal(rec()?.status, 'healthy');
  assert.equal(manager.heartbeats, 2);
  assert.equal(probe.calls.length, 0, 'ttl instances are never probed');

  const down = await manager.heartbeat('web', 'a', { status: 'unhealthy', reason: 'db down' });
  assert.equal(down.status, 'unhealthy');
  assert.equal(down.reason, 'db down');
  const revision = registry.revision;
  await manager.heartbeat('web', 'a', { status: 'unhealthy' });
  assert.equal(registry.revision, revision, 'a heartbeat that changes no status writes nothing');

  const events = healthEvents.map((e) => [e.from, e.to]);
  assert.deepEqual(events, [['new', 'healthy'], ['healthy', 'unhealthy'], ['unhealthy', 'healthy'], ['healthy', 'unhealthy']]);
});

test('heartbeat errors: unknown instance, instance without a ttl check', async (t) => {
  const { registry, manager } = await setup();
  t.after(() => manager.stop());
  await rejectsWith(manager.heartbeat('web', 'ghost'), 'SKEIN_E_UNKNOWN_INSTANCE');
  await registry.register(inst('h', { type: 'http' }));
  await registry.register(inst('n', null));
  await rejectsWith(manager.heartbeat('web', 'h'), 'SKEIN_E_NO_TTL_CHECK');
  await rejectsWith(manager.heartbeat('web', 'n'), 'SKEIN_E_NO_TTL_CHECK');
  await assert.rejects(manager.heartbeat('web', 'h'), /has a http check, not a ttl check/);
  assert.equal(manager.heartbeats, 0);
});

test('after a restart, TTL instances get ttl + ttlGraceMs before they expire', async (t) => {
  const store = new MemoryStore();
  const clock = new ManualClock(T0);
  const first = await Registry.open({ clock, store });
  await first.register(inst('a', { type: 'ttl', ttl: '5s' }));
  await first.register(inst('h', { type: 'http', interval: '1s', initialState: 'healthy' }));
  clock.advance(60_000); // the control plane was down for a minute

  const { registry, manager, probe, tick } = await setup({ ttlGraceMs: 10_000 }, store, clock);
  t.after(() => manager.stop());
  assert.equal(registry.get('web', 'a')?.status, 'healthy');
  assert.equal(manager.ttlRemaining('web', 'a'), 15_000);
  await tick(14_999);
  assert.equal(registry.get('web', 'a')?.status, 'healthy', 'within ttl + grace');
  await tick(1);
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
  assert.match(registry.get('web', 'a')?.reason ?? '', /TTL expired/);
  assert.ok(probe.count('h') >= 15, 'loaded http instances are probed again');
});

test('without ttlGraceMs, a restart gives TTL instances CONTROL_DEFAULTS.ttlGraceMs', async (t) => {
  const store = new MemoryStore();
  const clock = new ManualClock(T0);
  await (await Registry.open({ clock, store })).register(inst('a', { type: 'ttl', ttl: '5s' }));
  const { manager } = await setup({}, store, clock);
  t.after(() => manager.stop());
  assert.equal(manager.ttlRemaining('web', 'a'), 5000 + CONTROL_DEFAULTS.ttlGraceMs);
});

test('a heartbeat during the restart grace refreshes the deadline to ttl', async (t) => {
  const store = new MemoryStore();
  const clock = new ManualClock(T0);
  await (await Registry.open({ clock, store })).register(inst('a', { type: 'ttl', ttl: '5s' }));
  const { registry, manager, tick } = await setup({ ttlGraceMs: 30_000 }, store, clock);
  t.after(() => manager.stop());
  await tick(1000);
  await manager.heartbeat('web', 'a');
  assert.equal(manager.ttlRemaining('web', 'a'), 5000);
  await tick(5000);
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
});

test('deregisterAfter removes an instance unhealthy for that long', async (t) => {
  const { registry, manager, probe, tick } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('dead', { type: 'http', interval: '1s', deregisterAfter: '5s' }));
  await registry.register(inst('fine', { type: 'http', interval: '1s', deregisterAfter: '5s' }));
  probe.outcome.set('dead', false);
  await tick(0);
  await tick(4000);
  assert.equal(registry.get('web', 'dead')?.status, 'unhealthy');
  assert.notEqual(registry.get('web', 'dead'), undefined, '4 s unhealthy: kept');
  await tick(1000);
  assert.equal(registry.get('web', 'dead'), undefined, '5 s unhealthy: removed');
  assert.equal(registry.get('web', 'fine')?.status, 'healthy');
  await tick(60_000);
  assert.notEqual(registry.get('web', 'fine'), undefined, 'healthy instances are never reaped');
  const calls = probe.count('dead');
  await tick(10_000);
  assert.equal(probe.count('dead'), calls, 'a reaped instance is no longer probed');
});

test('deregisterAfter counts from when the TTL expired', async (t) => {
  const { registry, manager, tick } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'ttl', ttl: '2s', deregisterAfter: '5s' }));
  await tick(2000);
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
  await tick(4999);
  assert.notEqual(registry.get('web', 'a'), undefined);
  await tick(1);
  assert.equal(registry.get('web', 'a'), undefined);
  assert.equal(manager.ttlTracked, 0);
});

test('deregistering an instance stops its probes, even one in flight', async (t) => {
  const { registry, manager, probe, clock, tick } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'http', interval: '1s' }));
  await registry.register(inst('b', { type: 'http', interval: '1s' }));
  await tick(0);
  await tick(1000);
  assert.equal(probe.count('a'), 2);

  probe.hold = true;
  await tick(1000); // third probe of a is now in flight
  assert.equal(probe.count('a'), 3);
  await registry.deregister('web', 'a');
  probe.outcome.set('a', false);
  probe.release();
  await flush();
  probe.hold = false;
  await tick(10_000);
  assert.equal(probe.count('a'), 3, 'no probe after deregistration');
  assert.ok(probe.count('b') >= 12, 'other instances keep being probed');
  assert.equal(manager.probing, 1);
  assert.ok(clock.pending <= 2, `only b's probe timer and the sweep remain (${clock.pending})`);
});

test('a changed check replaces the probe; stop() cancels every timer', async (t) => {
  const { registry, manager, probe, clock, tick } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'http', interval: '1s' }));
  await tick(0);
  await registry.register(inst('a', { type: 'tcp', interval: '5s' }));
  await tick(0);
  assert.deepEqual(probe.calls.map((c) => c.check.type), ['http', 'tcp']);
  await tick(4999);
  assert.equal(probe.calls.length, 2, 'the old 1 s schedule is gone');
  await tick(1);
  assert.equal(probe.calls.length, 3);

  await registry.register(inst('a', { type: 'ttl', ttl: '10s' }));
  await tick(10_000);
  assert.equal(probe.calls.length, 3, 'a ttl check is not probed');
  assert.equal(manager.probing, 0);
  assert.equal(manager.ttlTracked, 1);

  manager.stop();
  assert.equal(clock.pending, 0);
  await registry.register(inst('b', { type: 'http' }));
  await tick(60_000);
  assert.equal(probe.count('b'), 0, 'a stopped manager does not follow the registry');
});

test('re-registering with a different ttl restarts the deadline with the new ttl', async (t) => {
  const { registry, manager, tick } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'ttl', ttl: '5s' }));
  await tick(4000);
  await registry.register(inst('a', { type: 'ttl', ttl: '20s' }));
  assert.equal(manager.ttlRemaining('web', 'a'), 20_000);
  await tick(10_000); // past the old deadline, within the new one
  assert.equal(registry.get('web', 'a')?.status, 'healthy');
  await tick(10_000);
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
});

test('re-registering with a changed check (same ttl) restarts the deadline', async (t) => {
  const { registry, manager, tick } = await setup();
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'ttl', ttl: '5s' }));
  await tick(6000);
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
  await registry.register(inst('a', { type: 'ttl', ttl: '5s', deregisterAfter: '1h' }));
  assert.equal(registry.get('web', 'a')?.status, 'healthy');
  assert.equal(manager.ttlRemaining('web', 'a'), 5000);
  await tick(4000);
  assert.equal(registry.get('web', 'a')?.status, 'healthy', 'the new check counts from its registration');
});

test('replicated: a heartbeat goes to the store, not to this replica\'s deadlines; the leader applies what the store says', async (t) => {
  const beats: string[] = [];
  const alive = new Set<string>();
  const { registry, manager, tick } = await setup({
    heartbeats: {
      beat: async (service, id, ttlMs, report) => void beats.push(`${service}/${id} ttl=${ttlMs} ${report.status ?? 'healthy'}`),
      alive: () => alive,
    },
  });
  t.after(() => manager.stop());
  await registry.register(inst('a', { type: 'ttl', ttl: '5s' }));
  const rec = () => registry.get('web', 'a');
  const r = await manager.heartbeat('web', 'a', { status: 'unhealthy', reason: 'db down' });
  assert.deepEqual(beats, ['web/a ttl=5000 unhealthy']);
  assert.equal(r.status, 'healthy', 'the status is the leader\'s to change, when the store says so');
  // The leader sees the heartbeat key written (the store's view first, as its watch does): its lease is the TTL now, no local deadline.
  alive.add('web\u0000a');
  manager.beatSeen('web', 'a', { status: 'unhealthy', reason: 'db down' });
  await tick(10);
  assert.equal(rec()?.status, 'unhealthy');
  assert.equal(rec()?.reason, 'db down');
  assert.equal(manager.ttlRemaining('web', 'a'), undefined);
  manager.beatSeen('web', 'a', {});
  await tick(20_000);
  assert.equal(rec()?.status, 'healthy', 'no local deadline expires it: etcd\'s lease does');
  alive.delete('web\u0000a');
  manager.beatExpired('web', 'a');
  await tick(10);
  assert.equal(rec()?.status, 'unhealthy');
  assert.equal(rec()?.reason, 'TTL expired: no heartbeat within 5000ms');
});

test('replicated: a newly elected leader gives instances without a live heartbeat key their TTL (no restart grace: heartbeats never stopped being taken), and none to those with one', async (t) => {
  const clock = new ManualClock(T0);
  const registry = await Registry.open({ clock, store: new MemoryStore() });
  await registry.register(inst('live', { type: 'ttl', ttl: '5s' }));
  await registry.register(inst('silent', { type: 'ttl', ttl: '5s' }));
  const manager = new HealthManager({ registry, clock, ttlGraceMs: 15_000, heartbeats: { beat: async () => undefined, alive: () => new Set(['web\u0000live']) } });
  manager.start();
  t.after(() => manager.stop());
  assert.equal(manager.ttlRemaining('web', 'live'), undefined);
  assert.equal(manager.ttlRemaining('web', 'silent'), 5_000);
});
