import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { SkeinError, type ErrorCode } from '../../core/errors.js';
import { parseInstance, parseService } from '../../api/parse.js';
import type { Instance } from '../../api/types.js';
import { MemoryStore, type Store, type StoreOp } from '../store/store.js';
import { Registry, type HealthEvent, type RegistryEvent } from './registry.js';

const T0 = 1_700_000_000_000;

function inst(id: string, extra: Record<string, unknown> = {}, service = 'web'): Instance {
  return parseInstance({ id, service, address: '10.0.0.1', port: 8080, ...extra });
}

async function setup(store: Store = new MemoryStore(), clock = new ManualClock(T0)) {
  const registry = await Registry.open({ clock, store });
  const events: RegistryEvent[] = [];
  const health: HealthEvent[] = [];
  registry.onChange((e) => events.push(e));
  registry.onHealthEvent((e) => health.push(e));
  return { registry, store, clock, events, health };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, match?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof SkeinError, String(e));
    assert.equal(e.code, code);
    if (match !== undefined) assert.match(e.message, match);
    return true;
  });
}

test('a new registry is empty at revision 0', async () => {
  const { registry } = await setup();
  assert.equal(registry.revision, 0);
  assert.equal(registry.startRevision, 0);
  assert.equal(registry.instanceCount, 0);
  assert.equal(registry.serviceCount, 0);
  assert.deepEqual(registry.listServices(), []);
});

test('register creates a record, bumps the revision and emits add', async () => {
  const { registry, events, health } = await setup();
  const r = await registry.register(inst('a'));
  assert.equal(r.created, true);
  assert.equal(r.changed, true);
  assert.equal(registry.revision, 1);
  assert.equal(r.record.createRevision, 1);
  assert.equal(r.record.modRevision, 1);
  assert.equal(r.record.status, 'healthy', 'no check: healthy');
  assert.equal(r.record.reason, 'no health check');
  assert.equal(r.record.registeredAt, T0);
  assert.ok(Object.isFrozen(r.record));
  assert.equal(events.length, 1);
  assert.deepEqual(
    { type: events[0]?.type, revision: events[0]?.revision, service: events[0]?.service },
    { type: 'add', revision: 1, service: 'web' },
  );
  assert.equal(registry.get('web', 'a'), r.record);
  assert.equal(health.length, 1);
  assert.deepEqual(health[0], { time: T0, revision: 1, service: 'web', id: 'a', from: 'new', to: 'healthy', reason: 'no health check' });
  assert.equal(registry.instanceCount, 1);
  assert.equal(registry.healthyCount, 1);
});

test('re-registering the same instance is a no-op: no revision bump, no event', async () => {
  const { registry, events } = await setup();
  const first = await registry.register(inst('a', { labels: { x: 'y' } }));
  const again = await registry.register(inst('a', { labels: { x: 'y' } }));
  assert.equal(again.changed, false);
  assert.equal(again.created, false);
  assert.equal(again.record, first.record);
  assert.equal(registry.revision, 1);
  assert.equal(events.length, 1);
});

test('updating an instance keeps its creation and status, bumps modRevision', async () => {
  const { registry, events, clock } = await setup();
  await registry.register(inst('a', { check: { type: 'http' } }));
  await registry.setStatus('web', 'a', 'healthy', 'HTTP 200');
  clock.advance(5000);
  const r = await registry.register(inst('a', { check: { type: 'http' }, weight: 7 }));
  assert.equal(r.created, false);
  assert.equal(r.changed, true);
  assert.equal(r.record.instance.weight, 7);
  assert.equal(r.record.createRevision, 1);
  assert.equal(r.record.modRevision, 3);
  assert.equal(r.record.registeredAt, T0);
  assert.equal(r.record.status, 'healthy', 'same check: status kept');
  assert.equal(r.record.reason, 'HTTP 200');
  assert.equal(r.record.since, T0);
  assert.deepEqual(events.map((e) => [e.type, e.revision]), [['add', 1], ['update', 2], ['update', 3]]);

  // a changed check resets the status to the new check's initial state
  const changed = await registry.register(inst('a', { check: { type: 'http', path: '/other' }, weight: 7 }));
  assert.equal(changed.record.status, 'unhealthy');
  assert.equal(changed.record.reason, 'initial state (http check)');
  assert.equal(changed.record.since, T0 + 5000);
  assert.equal(registry.healthyCount, 0);
});

test('every change bumps the revision and emits one event carrying it', async () => {
  const { registry, events } = await setup();
  await registry.putService(parseService({ name: 'web', labels: { a: 'b' } }));
  await registry.register(inst('a'));
  await registry.register(inst('b', { check: { type: 'tcp' } }));
  await registry.setStatus('web', 'b', 'healthy', 'TCP ok');
  await registry.register(inst('a', { weight: 3 }));
  await registry.deregister('web', 'a');
  await registry.deleteService('web');
  assert.equal(registry.revision, 7);
  assert.deepEqual(
    events.map((e) => [e.type, e.revision, e.service]),
    [
      ['service', 1, 'web'],
      ['add', 2, 'web'],
      ['add', 3, 'web'],
      ['update', 4, 'web'],
      ['update', 5, 'web'],
      ['remove', 6, 'web'],
      ['service', 7, 'web'],
    ],
  );
  const svc = events[0];
  assert.ok(svc?.type === 'service');
  assert.equal(svc.definition?.name, 'web');
  const del = events[6];
  assert.ok(del?.type === 'service');
  assert.equal(del.definition, null);
  const removed = events[5];
  assert.ok(removed?.type === 'remove');
  assert.equal(removed.record.instance.id, 'a');
  assert.equal(registry.serviceRevision('web'), 7);
  assert.equal(registry.hasService('web'), true, 'instance b keeps the service');
});

test('putService with an identical definition changes nothing; deleteService of unknown is refused', async () => {
  const { registry, events } = await setup();
  assert.deepEqual(await registry.putService(parseService({ name: 'api' })), { created: true, changed: true });
  assert.deepEqual(await registry.putService(parseService({ name: 'api' })), { created: false, changed: false });
  assert.deepEqual(await registry.putService(parseService({ name: 'api', labels: { v: '2' } })), { created: false, changed: true });
  assert.equal(registry.revision, 2);
  assert.equal(events.length, 2);
  await registry.deleteService('api');
  assert.equal(registry.hasService('api'), false, 'a service with no definition and no instances disappears');
  await rejectsWith(registry.deleteService('api'), 'SKEIN_E_UNKNOWN_SERVICE');
  assert.equal(registry.revision, 3);
});

test('listInstances: healthy only by default, all on request, sorted by id', async () => {
  const { registry } = await setup();
  await registry.register(inst('c'));
  await registry.register(inst('a', { check: { type: 'http' } })); // starts unhealthy
  await registry.register(inst('b'));
  await registry.register(inst('z', {}, 'other'));
  assert.deepEqual(registry.listInstances('web').map((r) => r.instance.id), ['b', 'c']);
  assert.deepEqual(registry.listInstances('web', { all: true }).map((r) => r.instance.id), ['a', 'b', 'c']);
  const summary = registry.listServices();
  assert.deepEqual(summary.map((s) => [s.name, s.instances, s.healthy]), [['other', 1, 1], ['web', 3, 2]]);
  assert.equal(registry.instanceCount, 4);
  assert.equal(registry.healthyCount, 3);
  assert.equal([...registry.allInstances()].length, 4);
});

test('listInstances of an unknown service: SKEIN_E_UNKNOWN_SERVICE', async () => {
  const { registry } = await setup();
  assert.throws(
    () => registry.listInstances('nope'),
    (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_UNKNOWN_SERVICE' && e.status === 404 && /"nope"/.test(e.message),
  );
});

test('setStatus transitions record the time and reason, and emit health events', async () => {
  const { registry, clock, events, health } = await setup();
  await registry.register(inst('a', { check: { type: 'http' } }));
  assert.equal(registry.get('web', 'a')?.status, 'unhealthy');
  assert.deepEqual([health[0]?.from, health[0]?.to, health[0]?.reason], ['new', 'unhealthy', 'initial state (http check)']);

  clock.advance(1234);
  const up = await registry.setStatus('web', 'a', 'healthy', 'HTTP 200 from GET /health');
  assert.equal(up.status, 'healthy');
  assert.equal(up.since, T0 + 1234);
  assert.equal(up.reason, 'HTTP 200 from GET /health');
  assert.equal(up.modRevision, 2);
  assert.equal(registry.healthyCount, 1);
  assert.deepEqual(health[1], { time: T0 + 1234, revision: 2, service: 'web', id: 'a', from: 'unhealthy', to: 'healthy', reason: 'HTTP 200 from GET /health' });

  // the same status again changes nothing
  const same = await registry.setStatus('web', 'a', 'healthy', 'HTTP 204');
  assert.equal(same, up);
  assert.equal(registry.revision, 2);
  assert.equal(health.length, 2);

  clock.advance(1000);
  await registry.setStatus('web', 'a', 'unhealthy', 'HTTP 503');
  assert.deepEqual([health[2]?.from, health[2]?.to, health[2]?.time, health[2]?.revision], ['healthy', 'unhealthy', T0 + 2234, 3]);
  assert.deepEqual(events.map((e) => e.type), ['add', 'update', 'update']);
  assert.equal(registry.listInstances('web').length, 0);
  assert.deepEqual(health.map((e) => e.to), ['unhealthy', 'healthy', 'unhealthy']);
});

test('unknown instances: SKEIN_E_UNKNOWN_INSTANCE', async () => {
  const { registry } = await setup();
  await rejectsWith(registry.deregister('web', 'ghost'), 'SKEIN_E_UNKNOWN_INSTANCE', /"ghost"/);
  await registry.register(inst('a'));
  await rejectsWith(registry.deregister('web', 'ghost'), 'SKEIN_E_UNKNOWN_INSTANCE');
  await rejectsWith(registry.setStatus('web', 'ghost', 'healthy', 'x'), 'SKEIN_E_UNKNOWN_INSTANCE');
  assert.equal(registry.revision, 1);
});

test('deregister removes the record, its counts and an empty service', async () => {
  const { registry, events } = await setup();
  await registry.register(inst('a'));
  const rec = await registry.deregister('web', 'a');
  assert.equal(rec.instance.id, 'a');
  assert.equal(registry.get('web', 'a'), undefined);
  assert.equal(registry.instanceCount, 0);
  assert.equal(registry.healthyCount, 0);
  assert.equal(registry.hasService('web'), false);
  assert.deepEqual(events.map((e) => [e.type, e.revision]), [['add', 1], ['remove', 2]]);
});

test('parseInstanceFor applies the service defaults', async () => {
  const { registry } = await setup();
  await registry.putService(parseService({ name: 'web', defaults: { weight: 4, check: { type: 'ttl', ttl: '10s' } } }));
  const i = registry.parseInstanceFor('web', 'a', { address: '10.0.0.1', port: 1 });
  assert.equal(i.weight, 4);
  assert.equal(i.check?.type, 'ttl');
  const r = await registry.register(i);
  assert.equal(r.record.status, 'healthy');
});

test('writes are durable in the store before they resolve', async () => {
  const store = new MemoryStore();
  const { registry } = await setup(store);
  await registry.register(inst('a'));
  const keys = new Map(await store.load());
  assert.equal(keys.get('meta/revision'), '1');
  assert.ok(keys.has('inst/web/a'));
  await registry.deregister('web', 'a');
  const after = new Map(await store.load());
  assert.equal(after.has('inst/web/a'), false);
  assert.equal(after.get('meta/revision'), '2');
});

test('reopening over the same store restores records, revision and startRevision', async () => {
  const store = new MemoryStore();
  const clock = new ManualClock(T0);
  const { registry: first } = await setup(store, clock);
  await first.putService(parseService({ name: 'web', ports: [{ name: 'http', port: 80 }], defaults: { weight: 2 } }));
  await first.register(inst('a', { check: { type: 'http' }, labels: { k: 'v' } }));
  await first.register(inst('b'));
  await first.setStatus('web', 'a', 'healthy', 'HTTP 200');
  await first.register(inst('gone', {}, 'api'));
  await first.deregister('api', 'gone');
  assert.equal(first.revision, 6);

  const { registry: second, events } = await setup(store, clock);
  assert.equal(second.revision, 6);
  assert.equal(second.startRevision, 6);
  assert.equal(second.instanceCount, 2);
  assert.equal(second.healthyCount, 2);
  assert.equal(second.hasService('api'), false);
  assert.deepEqual(second.get('web', 'a'), first.get('web', 'a'));
  assert.deepEqual(second.get('web', 'b'), first.get('web', 'b'));
  const a = second.get('web', 'a');
  assert.equal(a?.status, 'healthy');
  assert.equal(a?.reason, 'HTTP 200');
  assert.ok(Object.isFrozen(a?.instance.labels), 'restored instances are frozen');
  assert.ok(Object.isFrozen(a?.instance.check));
  assert.deepEqual(second.service('web')?.definition, first.service('web')?.definition);
  assert.equal(second.serviceRevision('web'), 4);
  assert.equal(events.length, 0, 'loading emits nothing');

  // re-registering the same instance after a restart is still a no-op
  const again = await second.register(inst('b'));
  assert.equal(again.changed, false);
  // and new writes continue the revision sequence
  await second.register(inst('c'));
  assert.equal(second.revision, 7);
  assert.equal(second.startRevision, 6);
  assert.equal(second.get('web', 'c')?.createRevision, 7);
});

class FailingStore extends MemoryStore {
  fail = false;
  attempts = 0;
  override async commit(ops: StoreOp[]): Promise<void> {
    this.attempts++;
    if (this.fail) throw new Error('disk full');
    return super.commit(ops);
  }
}

test('a failing store: onFatal once, the write rejected, later writes refused', async () => {
  const store = new FailingStore();
  const fatal: unknown[] = [];
  const registry = await Registry.open({ clock: new ManualClock(), store, onFatal: (e) => fatal.push(e) });
  await registry.register(inst('a'));
  store.fail = true;
  await rejectsWith(registry.register(inst('b')), 'SKEIN_E_STORE', /disk full/);
  await rejectsWith(registry.setStatus('web', 'a', 'unhealthy', 'x'), 'SKEIN_E_STORE', /accepts no writes/);
  await rejectsWith(registry.deregister('web', 'a'), 'SKEIN_E_STORE');
  await rejectsWith(registry.putService(parseService({ name: 'x' })), 'SKEIN_E_STORE');
  await rejectsWith(registry.deleteService('web'), 'SKEIN_E_STORE');
  assert.equal(fatal.length, 1);
  assert.equal((fatal[0] as Error).message, 'disk full');
  assert.equal(store.attempts, 2, 'refused writes never reach the store');
  store.fail = false;
  // the registry stays fail-stopped
  await rejectsWith(registry.register(inst('c')), 'SKEIN_E_STORE', /accepts no writes/);
  assert.equal(fatal.length, 1);
});

test('concurrent failing commits call onFatal only once', async () => {
  const store = new FailingStore();
  store.fail = true;
  let fatal = 0;
  const registry = await Registry.open({ clock: new ManualClock(), store, onFatal: () => fatal++ });
  const results = await Promise.allSettled([registry.register(inst('a')), registry.register(inst('b')), registry.register(inst('c'))]);
  assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected', 'rejected']);
  assert.equal(fatal, 1);
});
