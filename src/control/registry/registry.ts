/**
 * The registry: the source of truth for services and instances. Every change bumps one global
 * revision and is emitted as an event (the publisher, DNS cache and long-polls listen). Changes
 * are applied in memory, emitted, then made durable; the promise a caller awaits resolves only
 * once the change is on disk, so nothing acknowledged is lost.
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
  instances: Map<string, InstanceRecord>;
  /** Revision of the last change to this service. */
  revision: Revision;
  healthy: number;
}

const REV_KEY = 'meta/revision';
const svcKey = (name: string) => `svc/${name}`;
const instKey = (service: string, id: string) => `inst/${service}/${id}`;

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
  private readonly clock: Clock;
  private readonly store: Store;
  private readonly onFatal: (e: unknown) => void;
  private total = 0;
  private healthyTotal = 0;
  private failed: unknown = null;
  private healthListeners = new Set<(e: HealthEvent) => void>();

  private constructor(opts: RegistryOptions, startRevision: Revision) {
    this.clock = opts.clock;
    this.store = opts.store;
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
    for (const s of services) r.state(s.name).definition = s;
    for (const rec of records) {
      const st = r.state(rec.instance.service);
      st.instances.set(rec.instance.id, rec);
      st.revision = Math.max(st.revision, rec.modRevision);
      r.total++;
      if (rec.status === 'healthy') {
        st.healthy++;
        r.healthyTotal++;
      }
    }
    return r;
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
    const st = this.state(instance.service);
    const prev = st.instances.get(instance.id);
    if (prev !== undefined && sameJson(prev.instance, instance)) return { record: prev, created: false, changed: false };
    const now = this.clock.now();
    const rev = ++this.rev;
    const keepStatus = prev !== undefined && sameJson(prev.instance.check, instance.check);
    const status: HealthStatus = keepStatus ? prev.status : (instance.check?.initialState ?? 'healthy');
    const record: InstanceRecord = Object.freeze({
      instance,
      status,
      reason: keepStatus ? prev.reason : instance.check === null ? 'no health check' : `initial state (${instance.check.type} check)`,
      since: keepStatus ? prev.since : now,
      registeredAt: prev?.registeredAt ?? now,
      createRevision: prev?.createRevision ?? rev,
      modRevision: rev,
    });
    this.putRecord(st, prev, record);
    this.emit({ type: prev === undefined ? 'add' : 'update', revision: rev, service: instance.service, record });
    if (!keepStatus) this.recordHealth(record, prev?.status ?? 'new');
    await this.persist([{ type: 'put', key: instKey(instance.service, instance.id), value: JSON.stringify(record) }]);
    return { record, created: prev === undefined, changed: true };
  }

  async deregister(service: string, id: string): Promise<InstanceRecord> {
    this.assertWritable();
    const rec = this.mustGet(service, id);
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
    const st = this.state(def.name);
    const prev = st.definition;
    if (prev !== null && sameJson(prev, def)) return { created: false, changed: false };
    const rev = ++this.rev;
    st.definition = def;
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
    const rev = ++this.rev;
    st.definition = null;
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

  private state(name: string): ServiceState {
    let s = this.services.get(name);
    if (s === undefined) {
      s = { definition: null, instances: new Map(), revision: 0, healthy: 0 };
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

