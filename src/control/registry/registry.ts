/**
 * The registry: services and instances in memory, every change with a revision and emitted as an
 * event (the publisher, DNS cache and long-polls listen). Two ways to keep it:
 *
 * - Local (the embedded store, or memory): this process is the source of truth. Every change
 *   bumps one global revision; it is applied in memory, emitted, then made durable; the promise a
 *   caller awaits resolves only once it is on disk, so nothing acknowledged is lost.
 * - Replicated (the etcd store: several control-plane replicas, docs/operations.md): etcd is the
 *   source of truth and its revision is the registry's. A write is a transaction in etcd, guarded
 *   by the revision of what it read (optimistic concurrency between replicas: a lost race is
 *   SKEIN_E_CONCURRENT_CHANGE, or retried where the write is the registry's own); every replica,
 *   the writer included, applies the change when its watch delivers it (`applyChanges`), and a
 *   write resolves once this replica has applied its revision, so a client reads its own writes.
 *
 * Why one file of ~670 lines: both ways share every read, the revision, the events and the
 * validation of each write; split by way, each change would be written twice.
 */
import { SkeinError } from '../../core/errors.js';
import type { Clock } from '../../core/clock.js';
import { parseInstance, parseService, serviceToRaw } from '../../api/parse.js';
import type { HealthStatus, Instance, Service } from '../../api/types.js';
import type { Store, StoreOp } from '../store/store.js';
import { deepFreeze } from '../../core/freeze.js';

export type Revision = number;

export interface InstanceRecord {
  readonly instance: Instance;
  readonly status: HealthStatus;
  /** Why the instance has its status (the last check result or event). */
  readonly reason: string;
  /** When the status last changed (ms since epoch). */
  readonly since: number;
  readonly registeredAt: number;
  readonly createRevision: Revision;
  readonly modRevision: Revision;
}

export type RegistryEvent =
  | { readonly type: 'add' | 'update' | 'remove'; readonly revision: Revision; readonly service: string; readonly record: InstanceRecord }
  | { readonly type: 'service'; readonly revision: Revision; readonly service: string; readonly definition: Service | null };

export interface HealthEvent {
  readonly time: number;
  readonly revision: Revision;
  readonly service: string;
  readonly id: string;
  readonly from: HealthStatus | 'new';
  readonly to: HealthStatus;
  readonly reason: string;
}

export interface ServiceSummary {
  readonly name: string;
  readonly instances: number;
  readonly healthy: number;
  readonly revision: Revision;
  readonly definition: Service | null;
}

interface ServiceState {
  definition: Service | null;
  /** Revision of the definition's last write (0: none): what a replicated write of it is guarded by. */
  definitionRevision: Revision;
  instances: Map<string, InstanceRecord>;
  /** Revision of the last change to this service. */
  revision: Revision;
  healthy: number;
}

const REV_KEY = 'meta/revision';
const svcKey = (name: string) => `svc/${name}`;
const instKey = (service: string, id: string) => `inst/${service}/${id}`;

/** A write of a replicated registry holds only if `key` is still at `modRevision` (0: absent). */
export interface Guard {
  readonly key: string;
  readonly modRevision: Revision;
}

/**
 * Where a replicated registry writes (the etcd store). `fenced`: the write holds only while this
 * replica is the elected leader (health status and reaping); otherwise it is refused with
 * SKEIN_E_STORE. Resolves with whether every guard held, and the store's revision after it.
 */
export interface RegistryLog {
  write(ops: StoreOp[], guards: readonly Guard[], fenced?: boolean): Promise<{ ok: boolean; revision: Revision }>;
}

/** A key of the replicated store as the registry sees it (keys relative to the mesh's prefix). */
export type StoredChange =
  | { readonly type: 'put'; readonly key: string; readonly value: string; readonly createRevision: Revision; readonly modRevision: Revision }
  | { readonly type: 'del'; readonly key: string; readonly modRevision: Revision };

/** What an instance record is in the replicated store: its revisions are the key's. */
type StoredRecord = Omit<InstanceRecord, 'createRevision' | 'modRevision'>;

/** How long a replicated write waits for this replica's watch to deliver it. */
const APPLY_WAIT_MS = 10_000;
/** Retries of the registry's own writes (register, status) when another replica raced them. */
const RACE_RETRIES = 5;
/** Sends of one write whose outcome was unknown (the store lost its leader as it went out). */
const UNKNOWN_OUTCOME_RETRIES = 3;

export interface RegistryOptions {
  clock: Clock;
  store: Store;
  /** Called when the store fails: the registry cannot go on safely (fail-stop). */
  onFatal?: (e: unknown) => void;
}

type Listener = (e: RegistryEvent) => void;

export class Registry {
  private readonly services = new Map<string, ServiceState>();
  private rev: Revision = 0;
  /** The revision loaded at start-up: history (and resumable watches) begins after it. */
  readonly startRevision: Revision;
  private readonly listeners = new Set<Listener>();
  private readonly resetListeners = new Set<(revision: Revision) => void>();
  private inReset = false;
  private readonly clock: Clock;
  private readonly store: Store;
  private readonly onFatal: (e: unknown) => void;
  private total = 0;
  private healthyTotal = 0;
  private failed: unknown = null;
  private healthListeners = new Set<(e: HealthEvent) => void>();
  /** Replicated: where writes go (null: local). */
  private readonly log: RegistryLog | null;
  /** Replicated writes waiting for their revision to be applied. */
  private waiters: Array<{ revision: Revision; resolve: () => void }> = [];

  private constructor(opts: RegistryOptions, startRevision: Revision, log: RegistryLog | null = null) {
    this.clock = opts.clock;
    this.store = opts.store;
    this.log = log;
    this.onFatal = opts.onFatal ?? (() => {});
    this.startRevision = startRevision;
    this.rev = startRevision;
  }

  /** Opens the registry over a store, loading what it holds. */
  static async open(opts: RegistryOptions): Promise<Registry> {
    const entries = await opts.store.load();
    let revision = 0;
    const services: Service[] = [];
    const records: InstanceRecord[] = [];
    for (const [key, value] of entries) {
      if (key === REV_KEY) revision = Number(value);
      else if (key.startsWith('svc/')) services.push(parseService(JSON.parse(value)));
      else if (key.startsWith('inst/')) {
        const raw = JSON.parse(value) as InstanceRecord;
        records.push(Object.freeze({ ...raw, instance: deepFreeze(raw.instance) }));
      }
    }
    const r = new Registry(opts, revision);
    r.fill(services.map((s) => [s, 0]), records);
    return r;
  }

  /**
   * A replicated registry (the etcd store): its state is `entries`, read at `revision`; writes go
   * to `log`; the owner feeds it every later change with `applyChanges` (and `reset` after a
   * compaction), from a watch that starts at revision + 1.
   */
  static replicated(opts: Omit<RegistryOptions, 'store'> & { log: RegistryLog }, entries: readonly StoredChange[], revision: Revision): Registry {
    const r = new Registry({ ...opts, store: new NoStore() }, revision, opts.log);
    const services: Array<[Service, Revision]> = [];
    const records: InstanceRecord[] = [];
    for (const e of entries) {
      if (e.type !== 'put') continue;
      if (e.key.startsWith('svc/')) services.push([parseService(JSON.parse(e.value)), e.modRevision]);
      else if (e.key.startsWith('inst/')) records.push(storedRecord(e));
    }
    r.fill(services, records);
    return r;
  }

  private fill(services: ReadonlyArray<[Service, Revision]>, records: readonly InstanceRecord[]): void {
    for (const [s, rev] of services) {
      const st = this.state(s.name);
      st.definition = s;
      st.definitionRevision = rev;
      st.revision = Math.max(st.revision, rev);
    }
    for (const rec of records) {
      const st = this.state(rec.instance.service);
      st.instances.set(rec.instance.id, rec);
      st.revision = Math.max(st.revision, rec.modRevision);
      this.total++;
      if (rec.status === 'healthy') {
        st.healthy++;
        this.healthyTotal++;
      }
    }
  }

  /** Replicated: the registry keeps its state in another store, and these are its changes. */
  get replicated(): boolean {
    return this.log !== null;
  }

  get revision(): Revision {
    return this.rev;
  }

  get instanceCount(): number {
    return this.total;
  }

  get healthyCount(): number {
    return this.healthyTotal;
  }

  get serviceCount(): number {
    return this.services.size;
  }

  onChange(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /**
   * Hears a `reset` (the store read again after a compaction) once it is applied, with the
   * revision it is at. Its differences reach `onChange` listeners too, while `resetting` is true,
   * but with each key's own revision and not in revision order: a watch stream sends a fresh
   * snapshot instead (publisher.ts).
   */
  onReset(l: (revision: Revision) => void): () => void {
    this.resetListeners.add(l);
    return () => this.resetListeners.delete(l);
  }

  /** True while a `reset`'s differences are being emitted. */
  get resetting(): boolean {
    return this.inReset;
  }

  onHealthEvent(l: (e: HealthEvent) => void): () => void {
    this.healthListeners.add(l);
    return () => this.healthListeners.delete(l);
  }

  // ---- reads ----

  hasService(name: string): boolean {
    return this.services.has(name);
  }

  service(name: string): ServiceState | undefined {
    return this.services.get(name);
  }

  /** Revision of the last change to one service (0 when it never existed). */
  serviceRevision(name: string): Revision {
    return this.services.get(name)?.revision ?? 0;
  }

  listServices(): ServiceSummary[] {
    return [...this.services.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, s]) => ({ name, instances: s.instances.size, healthy: s.healthy, revision: s.revision, definition: s.definition }));
  }

  /** Instances of a service, sorted by id; healthy ones only unless `all`. */
  listInstances(service: string, opts: { all?: boolean } = {}): InstanceRecord[] {
    const s = this.services.get(service);
    if (s === undefined) throw new SkeinError('SKEIN_E_UNKNOWN_SERVICE', `service "${service}" is not registered`, { field: 'service' });
    const out: InstanceRecord[] = [];
    for (const rec of s.instances.values()) if (opts.all === true || rec.status === 'healthy') out.push(rec);
    return out.sort((a, b) => (a.instance.id < b.instance.id ? -1 : 1));
  }

  /** Every instance record, of every service. */
  *allInstances(): IterableIterator<InstanceRecord> {
    for (const s of this.services.values()) yield* s.instances.values();
  }

  get(service: string, id: string): InstanceRecord | undefined {
    return this.services.get(service)?.instances.get(id);
  }

  mustGet(service: string, id: string): InstanceRecord {
    const rec = this.get(service, id);
    if (rec === undefined) {
      throw new SkeinError('SKEIN_E_UNKNOWN_INSTANCE', `instance "${id}" of service "${service}" is not registered`, { field: 'id' });
    }
    return rec;
  }

  // ---- writes ----

  /** Registers or replaces an instance. Re-registering an identical instance changes nothing. */
  async register(instance: Instance): Promise<{ record: InstanceRecord; created: boolean; changed: boolean }> {
    this.assertWritable();
    if (this.log !== null) return this.replicatedRegister(instance);
    const st = this.state(instance.service);
    const prev = st.instances.get(instance.id);
    if (prev !== undefined && sameJson(prev.instance, instance)) return { record: prev, created: false, changed: false };
    const rev = ++this.rev;
    const record: InstanceRecord = Object.freeze({ ...this.registration(instance, prev), createRevision: prev?.createRevision ?? rev, modRevision: rev });
    const keepStatus = prev !== undefined && sameJson(prev.instance.check, instance.check);
    this.putRecord(st, prev, record);
    this.emit({ type: prev === undefined ? 'add' : 'update', revision: rev, service: instance.service, record });
    if (!keepStatus) this.recordHealth(record, prev?.status ?? 'new');
    await this.persist([{ type: 'put', key: instKey(instance.service, instance.id), value: JSON.stringify(record) }]);
    return { record, created: prev === undefined, changed: true };
  }

  /** `reaped`: the health manager removes an instance unhealthy past its deregisterAfter (replicated: the leader's write, fenced, and only of the record it judged). */
  async deregister(service: string, id: string, opts: { reaped?: boolean } = {}): Promise<InstanceRecord> {
    this.assertWritable();
    const rec = this.mustGet(service, id);
    if (this.log !== null) {
      const key = instKey(service, id);
      // A client's deregistration is anyone's; reaping is the leader's, of the record it saw unhealthy.
      if (opts.reaped === true) await this.replicate([{ type: 'del', key }], [{ key, modRevision: rec.modRevision }], true);
      else await this.replicate([{ type: 'del', key }], []);
      return rec;
    }
    const st = this.services.get(service) as ServiceState;
    const rev = ++this.rev;
    st.instances.delete(id);
    st.revision = rev;
    this.total--;
    if (rec.status === 'healthy') {
      st.healthy--;
      this.healthyTotal--;
    }
    const ops: StoreOp[] = [{ type: 'del', key: instKey(service, id) }];
    this.emit({ type: 'remove', revision: rev, service, record: rec });
    if (st.instances.size === 0 && st.definition === null) this.services.delete(service);
    await this.persist(ops);
    return rec;
  }

  /** Changes an instance's health status (from a check result or a heartbeat). */
  async setStatus(service: string, id: string, status: HealthStatus, reason: string): Promise<InstanceRecord> {
    this.assertWritable();
    if (this.log !== null) return this.replicatedStatus(service, id, status, reason);
    const prev = this.mustGet(service, id);
    if (prev.status === status) return prev;
    const st = this.services.get(service) as ServiceState;
    const rev = ++this.rev;
    const record: InstanceRecord = Object.freeze({ ...prev, status, reason, since: this.clock.now(), modRevision: rev });
    this.putRecord(st, prev, record);
    this.emit({ type: 'update', revision: rev, service, record });
    this.recordHealth(record, prev.status);
    await this.persist([{ type: 'put', key: instKey(service, id), value: JSON.stringify(record) }]);
    return record;
  }

  async putService(def: Service): Promise<{ created: boolean; changed: boolean }> {
    this.assertWritable();
    const current = this.services.get(def.name);
    const prev = current?.definition ?? null;
    if (prev !== null && sameJson(prev, def)) return { created: false, changed: false };
    if (this.log !== null) {
      // Guarded by the definition the caller read (routes and policies are read-modify-write).
      await this.replicateGuarded([{ type: 'put', key: svcKey(def.name), value: JSON.stringify(serviceToRaw(def)) }], current?.definitionRevision ?? 0, `service "${def.name}"`);
      return { created: prev === null, changed: true };
    }
    const st = this.state(def.name);
    const rev = ++this.rev;
    st.definition = def;
    st.definitionRevision = rev;
    st.revision = rev;
    this.emit({ type: 'service', revision: rev, service: def.name, definition: def });
    await this.persist([{ type: 'put', key: svcKey(def.name), value: JSON.stringify(serviceToRaw(def)) }]);
    return { created: prev === null, changed: true };
  }

  /** Removes a service's definition; its instances, if any, stay registered. */
  async deleteService(name: string): Promise<void> {
    this.assertWritable();
    const st = this.services.get(name);
    if (st === undefined || st.definition === null) {
      throw new SkeinError('SKEIN_E_UNKNOWN_SERVICE', `service "${name}" has no definition`, { field: 'service' });
    }
    if (this.log !== null) {
      await this.replicateGuarded([{ type: 'del', key: svcKey(name) }], st.definitionRevision, `service "${name}"`);
      return;
    }
    const rev = ++this.rev;
    st.definition = null;
    st.definitionRevision = 0;
    st.revision = rev;
    this.emit({ type: 'service', revision: rev, service: name, definition: null });
    if (st.instances.size === 0) this.services.delete(name);
    await this.persist([{ type: 'del', key: svcKey(name) }]);
  }

  /** Parses an instance body with its service's defaults applied. */
  parseInstanceFor(service: string, id: string, body: unknown): Instance {
    return parseInstance(body, { service, id, defaults: this.services.get(service)?.definition?.defaults ?? {} });
  }

  // ---- internals ----

  /** An instance's record as (re-)registering it makes it, but its revisions: a changed check starts its status over. */
  private registration(instance: Instance, prev: InstanceRecord | undefined): StoredRecord {
    const now = this.clock.now();
    const keepStatus = prev !== undefined && sameJson(prev.instance.check, instance.check);
    return {
      instance,
      status: keepStatus ? prev.status : (instance.check?.initialState ?? 'healthy'),
      reason: keepStatus ? prev.reason : instance.check === null ? 'no health check' : `initial state (${instance.check.type} check)`,
      since: keepStatus ? prev.since : now,
      registeredAt: prev?.registeredAt ?? now,
    };
  }

  // ---- replicated (the etcd store) ----

  private async replicatedRegister(instance: Instance): Promise<{ record: InstanceRecord; created: boolean; changed: boolean }> {
    const key = instKey(instance.service, instance.id);
    for (let i = 0; ; i++) {
      const prev = this.get(instance.service, instance.id);
      if (prev !== undefined && sameJson(prev.instance, instance)) return { record: prev, created: false, changed: false };
      const r = await this.replicate([{ type: 'put', key, value: JSON.stringify(this.registration(instance, prev)) }], [{ key, modRevision: prev?.modRevision ?? 0 }]);
      if (r.ok) return { record: this.get(instance.service, instance.id) ?? this.mustGet(instance.service, instance.id), created: prev === undefined, changed: true };
      if (i >= RACE_RETRIES) throw raced(`instance "${instance.id}" of service "${instance.service}"`);
    }
  }

  private async replicatedStatus(service: string, id: string, status: HealthStatus, reason: string): Promise<InstanceRecord> {
    const key = instKey(service, id);
    for (let i = 0; ; i++) {
      const prev = this.mustGet(service, id);
      if (prev.status === status) return prev;
      const next: StoredRecord = { instance: prev.instance, status, reason, since: this.clock.now(), registeredAt: prev.registeredAt };
      // A status is the leader's word (its health checks): fenced on its election.
      const r = await this.replicate([{ type: 'put', key, value: JSON.stringify(next) }], [{ key, modRevision: prev.modRevision }], true);
      if (r.ok) return this.mustGet(service, id);
      if (i >= RACE_RETRIES) throw raced(`instance "${id}" of service "${service}"`);
    }
  }

  /** A write that fails when another replica changed the key first: SKEIN_E_CONCURRENT_CHANGE. */
  private async replicateGuarded(ops: StoreOp[], modRevision: Revision, what: string): Promise<void> {
    const op = ops[0] as StoreOp;
    const r = await this.replicate(ops, [{ key: op.key, modRevision }]);
    // Not applied, unless the write itself was (sent again after an unknown outcome): the key holds what it wrote.
    if (!r.ok && !this.holds(op)) throw raced(what);
  }

  /** The registry's own view of `op`'s key is what `op` writes (a service definition). */
  private holds(op: StoreOp): boolean {
    if (!op.key.startsWith('svc/')) return false;
    const def = this.services.get(op.key.slice(4))?.definition ?? null;
    return op.type === 'del' ? def === null : def !== null && JSON.stringify(serviceToRaw(def)) === op.value;
  }

  /**
   * Writes to the log, then waits until this replica has applied the store's revision after it
   * (read your writes). A write whose outcome is unknown (the store's leader died as it went out)
   * is sent again when that is safe: a guarded write (if the first was applied, the guard now fails
   * and the caller reads the new state) or deletes only.
   */
  private async replicate(ops: StoreOp[], guards: readonly Guard[], fenced = false): Promise<{ ok: boolean; revision: Revision }> {
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await (this.log as RegistryLog).write(ops, guards, fenced);
        await this.applied(r.revision);
        return r;
      } catch (e) {
        const unknown = e instanceof SkeinError && (e.details as { outcome?: string } | undefined)?.outcome === 'unknown';
        const safe = guards.length > 0 || ops.every((op) => op.type === 'del');
        if (!unknown || !safe || attempt >= UNKNOWN_OUTCOME_RETRIES) throw e;
      }
    }
  }

  /** Resolves once the watch has delivered `revision` (rejects after APPLY_WAIT_MS: the write is in the store, this replica is behind). */
  applied(revision: Revision): Promise<void> {
    if (this.rev >= revision) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { revision, resolve: () => (timer.cancel(), resolve()) };
      const timer = this.clock.setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new SkeinError('SKEIN_E_STORE', `the change was stored at revision ${revision}, but this control-plane replica has not seen it within ${APPLY_WAIT_MS} ms (its watch on the store is behind); read it again later`));
      }, APPLY_WAIT_MS);
      this.waiters.push(w);
    });
  }

  /**
   * Changes from the replicated store's watch, in revision order, then the store's revision after
   * them (which may be past the last change: a progress notification, or keys that are not the
   * registry's). Emits what they change, as a local write does.
   */
  applyChanges(changes: readonly StoredChange[], revision: Revision): void {
    for (const c of changes) {
      if (c.modRevision > this.rev) this.rev = c.modRevision;
      this.applyChange(c);
    }
    this.advance(revision);
  }

  /**
   * After a compaction the watch could not resume: `entries` is the whole store at `revision`.
   * The registry becomes it, emitting the difference (as changes at `revision`).
   */
  reset(entries: readonly StoredChange[], revision: Revision): void {
    const seen = new Set<string>();
    const changes: StoredChange[] = [];
    for (const e of entries) {
      if (e.type !== 'put' || !(e.key.startsWith('svc/') || e.key.startsWith('inst/'))) continue;
      seen.add(e.key);
      changes.push(e);
    }
    for (const [name, st] of [...this.services]) {
      if (st.definition !== null && !seen.has(svcKey(name))) changes.push({ type: 'del', key: svcKey(name), modRevision: revision });
      for (const id of st.instances.keys()) if (!seen.has(instKey(name, id))) changes.push({ type: 'del', key: instKey(name, id), modRevision: revision });
    }
    const unchanged = (c: StoredChange) => {
      if (c.type !== 'put') return false;
      if (c.key.startsWith('svc/')) return this.services.get(c.key.slice(4))?.definitionRevision === c.modRevision;
      const [service, id] = splitInstKey(c.key);
      return this.get(service, id)?.modRevision === c.modRevision;
    };
    this.inReset = true;
    try {
      for (const c of changes) {
        if (unchanged(c)) continue;
        this.rev = Math.max(this.rev, c.modRevision);
        this.applyChange(c);
      }
    } finally {
      this.inReset = false;
    }
    this.advance(revision);
    for (const l of this.resetListeners) l(this.rev);
  }

  private advance(revision: Revision): void {
    if (revision > this.rev) this.rev = revision;
    if (this.waiters.length === 0) return;
    const ready = this.waiters.filter((w) => w.revision <= this.rev);
    this.waiters = this.waiters.filter((w) => w.revision > this.rev);
    for (const w of ready) w.resolve();
  }

  private applyChange(c: StoredChange): void {
    if (c.key.startsWith('svc/')) {
      const name = c.key.slice(4);
      const definition = c.type === 'put' ? parseService(JSON.parse(c.value)) : null;
      const st = this.state(name);
      if (definition === null && st.definition === null) return;
      st.definition = definition;
      st.definitionRevision = c.type === 'put' ? c.modRevision : 0;
      st.revision = c.modRevision;
      this.emit({ type: 'service', revision: c.modRevision, service: name, definition });
      if (definition === null && st.instances.size === 0) this.services.delete(name);
      return;
    }
    if (!c.key.startsWith('inst/')) return;
    const [service, id] = splitInstKey(c.key);
    const prev = this.get(service, id);
    if (c.type === 'del') {
      if (prev === undefined) return;
      const st = this.services.get(service) as ServiceState;
      st.instances.delete(id);
      st.revision = c.modRevision;
      this.total--;
      if (prev.status === 'healthy') {
        st.healthy--;
        this.healthyTotal--;
      }
      this.emit({ type: 'remove', revision: c.modRevision, service, record: prev });
      if (st.instances.size === 0 && st.definition === null) this.services.delete(service);
      return;
    }
    const record = storedRecord(c);
    this.putRecord(this.state(service), prev, record);
    this.emit({ type: prev === undefined ? 'add' : 'update', revision: c.modRevision, service, record });
    if (prev === undefined || prev.status !== record.status || !sameJson(prev.instance.check, record.instance.check)) this.recordHealth(record, prev?.status ?? 'new');
  }

  private state(name: string): ServiceState {
    let s = this.services.get(name);
    if (s === undefined) {
      s = { definition: null, definitionRevision: 0, instances: new Map(), revision: 0, healthy: 0 };
      this.services.set(name, s);
    }
    return s;
  }

  private putRecord(st: ServiceState, prev: InstanceRecord | undefined, rec: InstanceRecord): void {
    st.instances.set(rec.instance.id, rec);
    st.revision = rec.modRevision;
    if (prev === undefined) this.total++;
    const d = (rec.status === 'healthy' ? 1 : 0) - (prev?.status === 'healthy' ? 1 : 0);
    st.healthy += d;
    this.healthyTotal += d;
  }

  private emit(e: RegistryEvent): void {
    for (const l of this.listeners) l(e);
  }

  private recordHealth(rec: InstanceRecord, from: HealthStatus | 'new'): void {
    const e: HealthEvent = Object.freeze({
      time: rec.since,
      revision: rec.modRevision,
      service: rec.instance.service,
      id: rec.instance.id,
      from,
      to: rec.status,
      reason: rec.reason,
    });
    for (const l of this.healthListeners) l(e);
  }

  private assertWritable(): void {
    if (this.failed !== null) throw new SkeinError('SKEIN_E_STORE', 'the store failed earlier; the registry accepts no writes', { cause: this.failed });
  }

  private async persist(ops: StoreOp[]): Promise<void> {
    ops.push({ type: 'put', key: REV_KEY, value: String(this.rev) });
    try {
      await this.store.commit(ops);
    } catch (e) {
      // Memory is now ahead of the disk: stop taking writes, and let the owner fail-stop.
      if (this.failed === null) {
        this.failed = e;
        this.onFatal(e);
      }
      throw e instanceof SkeinError ? e : new SkeinError('SKEIN_E_STORE', `store write failed: ${(e as Error).message}`, { cause: e });
    }
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** `inst/<service>/<id>` -> [service, id] (service names have no "/"). */
function splitInstKey(key: string): [string, string] {
  const rest = key.slice(5);
  const slash = rest.indexOf('/');
  return [rest.slice(0, slash), rest.slice(slash + 1)];
}

/** An instance record of the replicated store: the value, with the key's revisions. */
function storedRecord(c: Extract<StoredChange, { type: 'put' }>): InstanceRecord {
  const raw = JSON.parse(c.value) as StoredRecord;
  return Object.freeze({ ...raw, instance: deepFreeze(raw.instance), createRevision: c.createRevision, modRevision: c.modRevision });
}

function raced(what: string): SkeinError {
  return new SkeinError('SKEIN_E_CONCURRENT_CHANGE', `${what} was changed by another control-plane replica at the same time; read it again and retry`);
}

/** The local store of a replicated registry: it never writes there. */
class NoStore implements Store {
  readonly kind = 'replicated';
  async load(): Promise<Array<[string, string]>> {
    return [];
  }
  async commit(): Promise<void> {
    throw new SkeinError('SKEIN_E_INTERNAL', 'a replicated registry wrote to its local store');
  }
  async close(): Promise<void> {}
}

