/**
 * The registry's replicated mode without etcd: `Log` keeps keys with etcd's revision rules (one
 * global revision per write, create and mod revisions per key, guards on mod revisions) and
 * delivers every write to every replica's registry a tick later, as a watch does. The real store
 * under it is tested against a real etcd cluster (test/etcd-store.test.ts); here the registry's
 * own rules: reads of its own writes, races between replicas, status writes fenced, a reset
 * after a compaction emitting only the difference.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import { parseInstance, parseService } from '../../api/parse.js';
import type { StoreOp } from '../store/store.js';
import { Registry, type Guard, type RegistryEvent, type RegistryLog, type StoredChange } from './registry.js';
import { EventEmitter } from 'node:events';
import { Publisher } from '../publisher.js';

class Log {
  rev = 0;
  readonly kv = new Map<string, { value: string; createRevision: number; modRevision: number }>();
  readonly replicas: Registry[] = [];
  /** Replicas whose watch is held: they get nothing until released. */
  readonly held = new Set<Registry>();
  private readonly pending = new Map<Registry, Array<{ changes: StoredChange[]; revision: number }>>();
  leader: Registry | null = null;

  writer(self: () => Registry): RegistryLog {
    return {
      write: async (ops: StoreOp[], guards: readonly Guard[], fenced = false) => {
        if (fenced && this.leader !== self()) throw new SkeinError('SKEIN_E_STORE', 'fenced: no longer the leader');
        const ok = guards.every((g) => (this.kv.get(g.key)?.modRevision ?? 0) === g.modRevision);
        if (!ok) return { ok: false, revision: this.rev };
        const rev = ++this.rev;
        const changes: StoredChange[] = [];
        for (const op of ops) {
          if (op.type === 'put') {
            const createRevision = this.kv.get(op.key)?.createRevision ?? rev;
            this.kv.set(op.key, { value: op.value, createRevision, modRevision: rev });
            changes.push({ type: 'put', key: op.key, value: op.value, createRevision, modRevision: rev });
          } else if (this.kv.delete(op.key)) changes.push({ type: 'del', key: op.key, modRevision: rev });
        }
        for (const r of this.replicas) {
          const q = this.pending.get(r) ?? [];
          q.push({ changes, revision: rev });
          this.pending.set(r, q);
        }
        setImmediate(() => this.deliver());
        return { ok: true, revision: rev };
      },
    };
  }

  deliver(): void {
    for (const r of this.replicas) {
      if (this.held.has(r)) continue;
      for (const b of this.pending.get(r) ?? []) r.applyChanges(b.changes, b.revision);
      this.pending.set(r, []);
    }
  }

  entries(): StoredChange[] {
    return [...this.kv].map(([key, v]) => ({ type: 'put' as const, key, ...v }));
  }

  replica(clock = new ManualClock(1_700_000_000_000)): { registry: Registry; events: RegistryEvent[] } {
    let self: Registry | null = null;
    const registry = Registry.replicated({ clock, log: this.writer(() => self as Registry) }, this.entries(), this.rev);
    self = registry;
    this.replicas.push(registry);
    const events: RegistryEvent[] = [];
    registry.onChange((e) => events.push(e));
    return { registry, events };
  }
}

const inst = (id: string, extra: Record<string, unknown> = {}) => parseInstance({ id, service: 'web', address: '10.0.0.1', port: 8080, ...extra });

test('a write resolves once its own replica applied it; every replica sees it with the store\'s revisions', async () => {
  const log = new Log();
  const a = log.replica();
  const b = log.replica();
  const r = await a.registry.register(inst('w1'));
  assert.equal(r.created, true);
  assert.equal(r.record.createRevision, 1);
  assert.equal(r.record.modRevision, 1);
  assert.equal(a.registry.revision, 1, 'read your writes: applied before the write resolved');
  assert.deepEqual(b.registry.listInstances('web').map((x) => x.instance.id), ['w1']);
  assert.deepEqual([a.events.map((e) => `${e.type}@${e.revision}`), b.events.map((e) => `${e.type}@${e.revision}`)], [['add@1'], ['add@1']]);
  // Registering the same instance again writes nothing.
  assert.equal((await b.registry.register(inst('w1'))).changed, false);
  assert.equal(log.rev, 1);
  // A third replica starting later lists it, at the store's revision.
  const c = log.replica();
  assert.equal(c.registry.startRevision, 1);
  assert.equal(c.registry.get('web', 'w1')?.modRevision, 1);
  await b.registry.deregister('web', 'w1');
  assert.equal(a.registry.get('web', 'w1'), undefined);
  assert.deepEqual(a.events.at(-1), { type: 'remove', revision: 2, service: 'web', record: r.record });
});

test('two replicas change one service definition at once: one wins, the other is told to read it again', async () => {
  const log = new Log();
  const a = log.replica();
  const b = log.replica();
  await a.registry.putService(parseService({ name: 'web' }));
  // b has seen revision 1; both now write on top of it.
  const pa = a.registry.putService(parseService({ name: 'web', labels: { team: 'a' } }));
  const pb = b.registry.putService(parseService({ name: 'web', labels: { team: 'b' } }));
  const [ra, rb] = await Promise.allSettled([pa, pb]);
  assert.equal(ra.status, 'fulfilled');
  assert.equal(rb.status, 'rejected');
  const err = (rb as PromiseRejectedResult).reason as SkeinError;
  assert.equal(err.code, 'SKEIN_E_CONCURRENT_CHANGE');
  assert.equal(err.message, 'service "web" was changed by another control-plane replica at the same time; read it again and retry');
  assert.deepEqual(b.registry.service('web')?.definition?.labels, { team: 'a' }, 'the loser sees the winner');
  // Read again, write again: it goes through.
  await b.registry.putService(parseService({ name: 'web', labels: { team: 'b' } }));
  assert.deepEqual(a.registry.service('web')?.definition?.labels, { team: 'b' });
});

test('instance registrations raced by another replica are retried on the fresh state (the registry\'s own write)', async () => {
  const log = new Log();
  const a = log.replica();
  const b = log.replica();
  const [ra, rb] = await Promise.all([a.registry.register(inst('w1', { port: 1 })), b.registry.register(inst('w1', { port: 2 }))]);
  assert.equal(ra.changed && rb.changed, true);
  assert.equal(log.rev, 2, 'the loser wrote again on top of the winner');
  assert.equal(a.registry.get('web', 'w1')?.instance.port, 2);
  assert.equal(a.registry.get('web', 'w1')?.createRevision, 1);
});

test('a status is the leader\'s write: fenced; the health event reaches every replica', async () => {
  const log = new Log();
  const a = log.replica();
  const b = log.replica();
  const health: string[] = [];
  b.registry.onHealthEvent((e) => health.push(`${e.id} ${e.from}->${e.to}: ${e.reason}`));
  await a.registry.register(inst('w1'));
  await assert.rejects(a.registry.setStatus('web', 'w1', 'unhealthy', 'probe failed'), /fenced: no longer the leader/);
  log.leader = a.registry;
  const rec = await a.registry.setStatus('web', 'w1', 'unhealthy', 'probe failed');
  assert.equal(rec.status, 'unhealthy');
  assert.equal(b.registry.healthyCount, 0);
  assert.deepEqual(health, ['w1 new->healthy: no health check', 'w1 healthy->unhealthy: probe failed']);
});

test('a replica whose watch fell behind a compaction is reset to the store: only the difference is emitted', async () => {
  const log = new Log();
  const a = log.replica();
  const b = log.replica();
  await a.registry.register(inst('keep'));
  await a.registry.register(inst('gone'));
  await a.registry.putService(parseService({ name: 'web' }));
  log.held.add(b.registry);
  await a.registry.register(inst('new'));
  await a.registry.deregister('web', 'gone');
  await a.registry.putService(parseService({ name: 'web', labels: { v: '2' } }));
  assert.equal(b.registry.get('web', 'new'), undefined, 'b is held');
  const before = b.events.length;
  b.registry.reset(log.entries(), log.rev);
  const diff = b.events.slice(before).map((e) => (e.type === 'service' ? `service ${JSON.stringify(e.definition?.labels)}` : `${e.type} ${e.record.instance.id}`));
  assert.deepEqual(diff.sort(), ['add new', 'remove gone', 'service {"v":"2"}']);
  assert.equal(b.registry.revision, log.rev);
  assert.deepEqual(b.registry.listInstances('web').map((x) => x.instance.id), ['keep', 'new']);
});

/** A watch stream's sink that keeps what it is sent. */
const collector = () => Object.assign(new EventEmitter(), { chunks: [] as string[], write(c: string) { this.chunks.push(c); return true; }, end() {}, destroy() {} });

test('after a reset, every watch stream gets one fresh snapshot of the store, not the difference out of revision order', async () => {
  const log = new Log();
  const a = log.replica();
  const b = log.replica();
  await a.registry.register(inst('keep'));
  await a.registry.register(inst('gone'));
  const publisher = new Publisher({ registry: b.registry, clock: new ManualClock(), pingIntervalMs: 0 });
  const sink = collector();
  publisher.subscribe({ service: 'web', since: null, format: 'ndjson', sink });
  const subscribedAt = b.registry.revision;
  log.held.add(b.registry);
  // Written in an order whose keys sort otherwise: the re-read lists 'aaa' (newest) before 'zzz'.
  await a.registry.register(inst('zzz'));
  await a.registry.register(inst('aaa'));
  await a.registry.deregister('web', 'gone');
  sink.chunks.length = 0;
  b.registry.reset(log.entries(), log.rev);
  const got = sink.chunks.map((c) => JSON.parse(c) as { type: string; revision: number; instances?: Array<{ id: string }> });
  assert.deepEqual(got.map((m) => [m.type, m.revision]), [['snapshot', log.rev]]);
  assert.deepEqual(got[0]!.instances!.map((i) => i.id).sort(), ['aaa', 'keep', 'zzz']);
  assert.equal(publisher.resyncs, 1);
  // Resuming from before the reset gets a snapshot too (the history cannot tell the way).
  const late = collector();
  publisher.subscribe({ service: 'web', since: subscribedAt, format: 'ndjson', sink: late });
  assert.deepEqual(late.chunks.map((c) => (JSON.parse(c) as { type: string }).type), ['snapshot']);
  publisher.close();
});

test('a write whose revision this replica never sees fails after a wait, saying it was stored', async () => {
  const log = new Log();
  const clock = new ManualClock(1_700_000_000_000);
  const a = log.replica(clock);
  log.held.add(a.registry);
  const p = a.registry.register(inst('w1'));
  await new Promise((r) => setImmediate(r));
  clock.advance(10_000);
  await assert.rejects(p, /stored at revision 1, but this control-plane replica has not seen it within 10000 ms/);
});

test('a write whose outcome was unknown (applied, then the store\'s leader died) is sent again safely: no duplicate, no false conflict', async () => {
  const log = new Log();
  const a = log.replica();
  const unknown = () => new SkeinError('SKEIN_E_STORE', 'the outcome of /v3/kv/txn is unknown', { details: { outcome: 'unknown' } });
  // Wrap the log: the first write is applied but its answer is lost.
  const inner = (a.registry as unknown as { log: RegistryLog }).log;
  let lose = 1;
  (a.registry as unknown as { log: RegistryLog }).log = {
    write: async (ops, guards, fenced) => {
      const r = await inner.write(ops, guards, fenced);
      if (lose-- > 0) throw unknown();
      return r;
    },
  };
  const reg = await a.registry.register(inst('w1'));
  assert.equal(reg.record.modRevision, 1, 'the first send was the one applied');
  assert.equal(log.rev, 1, 'the second send wrote nothing (its guard failed)');
  lose = 1;
  await a.registry.putService(parseService({ name: 'web', labels: { v: '1' } }));
  assert.deepEqual(a.registry.service('web')?.definition?.labels, { v: '1' }, 'no false SKEIN_E_CONCURRENT_CHANGE');
  assert.equal(log.rev, 2);
});

test('reaping is the leader\'s: a deposed replica\'s reaping is fenced off; a client\'s deregistration is anyone\'s', async () => {
  const log = new Log();
  const a = log.replica();
  const b = log.replica();
  await a.registry.register(inst('w1'));
  await a.registry.register(inst('w2'));
  await assert.rejects(a.registry.deregister('web', 'w1', { reaped: true }), /fenced: no longer the leader/);
  assert.notEqual(b.registry.get('web', 'w1'), undefined, 'not reaped by a replica that does not lead');
  log.leader = a.registry;
  await a.registry.deregister('web', 'w1', { reaped: true });
  assert.equal(b.registry.get('web', 'w1'), undefined);
  await b.registry.deregister('web', 'w2');
  assert.equal(a.registry.get('web', 'w2'), undefined);
});
