/**
 * Runs the health checks of every registered instance: HTTP and TCP probes on their interval
 * with healthy/unhealthy thresholds, TTL deadlines refreshed by heartbeats, and deregistration of
 * instances unhealthy for longer than their `deregisterAfter`. Status changes go through the
 * registry, which records each as an event with a time and a reason.
 *
 * After a restart every TTL instance gets `ttl + ttlGrace` to heartbeat again, so a control
 * plane restart does not mark the whole fleet unhealthy at once.
 *
 * Replicated (the etcd store, several control-plane replicas): only the elected leader runs a
 * HealthManager (started when elected, stopped when deposed). A heartbeat may reach any replica:
 * it goes to the store (`Heartbeats.beat`: a key bound to an etcd lease of the check's TTL, kept
 * alive by later heartbeats), and the leader hears of it through the watch: `beatSeen` when the
 * key is written (the first heartbeat of a lease, or a reported status), `beatExpired` when
 * etcd deletes it (the lease ran out: no heartbeat within the TTL). The TTL is then etcd's timer,
 * not the leader's, and a new leader does not lose it.
 */
import { SkeinError } from '../../core/errors.js';
import type { Clock, TimerHandle } from '../../core/clock.js';
import { CONTROL_DEFAULTS } from '../../api/control.js';
import type { HealthCheck, HealthStatus } from '../../api/types.js';
import type { InstanceRecord, Registry, RegistryEvent } from '../registry/registry.js';
import { probe as realProbe, type Probe, type ProbeResult } from '../../discovery/probe.js';

export interface HealthManagerOptions {
  registry: Registry;
  clock: Clock;
  probe?: Probe;
  /** Extra time TTL instances get after a control-plane start. Default 15 s. */
  ttlGraceMs?: number;
  /** How often TTL deadlines and deregisterAfter are checked. Default 1 s. */
  sweepIntervalMs?: number;
  onResult?: (check: HealthCheck, ok: boolean) => void;
  onError?: (e: unknown) => void;
  /** Replicated: where a heartbeat goes (the leader applies it: beatSeen, beatExpired). Absent: applied here. */
  heartbeats?: Heartbeats;
}

/** A heartbeat's report: its status (default healthy) and why. */
export interface HeartbeatReport {
  status?: HealthStatus;
  reason?: string;
}

/** Heartbeats kept in a replicated store, for the leader to apply. */
export interface Heartbeats {
  beat(service: string, id: string, ttlMs: number, report: HeartbeatReport): Promise<void>;
  /** Instances (keyOf) whose heartbeat key lives in the store now (a live view, kept by the store's watch before it calls beatSeen / beatExpired). */
  alive(): ReadonlySet<string>;
}

interface ProbeState {
  key: string;
  service: string;
  id: string;
  checkJson: string;
  timer: TimerHandle | null;
  passes: number;
  failures: number;
  running: boolean;
  stopped: boolean;
}

export const keyOf = (service: string, id: string) => `${service}\u0000${id}`;

export class HealthManager {
  private readonly registry: Registry;
  private readonly clock: Clock;
  private readonly probe: Probe;
  private readonly ttlGraceMs: number;
  private readonly sweepIntervalMs: number;
  private readonly onResult: (check: HealthCheck, ok: boolean) => void;
  private readonly onError: (e: unknown) => void;
  private readonly probes = new Map<string, ProbeState>();
  /** TTL instances: key -> deadline (ms since epoch) and the check it was set for. */
  private readonly deadlines = new Map<string, { at: number; check: HealthCheck }>();
  /** Instances with deregisterAfter set. */
  private readonly reapable = new Set<string>();
  private sweepTimer: TimerHandle | null = null;
  private unsubscribe: (() => void) | null = null;
  private readonly replicated: Heartbeats | null;
  heartbeats = 0;

  constructor(opts: HealthManagerOptions) {
    this.registry = opts.registry;
    this.clock = opts.clock;
    this.probe = opts.probe ?? realProbe;
    this.ttlGraceMs = opts.ttlGraceMs ?? CONTROL_DEFAULTS.ttlGraceMs;
    this.sweepIntervalMs = opts.sweepIntervalMs ?? 1000;
    this.onResult = opts.onResult ?? (() => {});
    this.onError = opts.onError ?? (() => {});
    this.replicated = opts.heartbeats ?? null;
  }

  start(): void {
    const now = this.clock.now();
    // Replicated: an instance whose heartbeat key lives needs no deadline (etcd's lease is its TTL).
    // One without gets a TTL from now and no grace: heartbeats never stopped being taken (any
    // replica takes them), so its lease ran out, or it never sent one.
    const grace = this.replicated === null ? this.ttlGraceMs : 0;
    for (const rec of this.registry.allInstances()) this.track(rec, now + grace);
    this.unsubscribe = this.registry.onChange((e) => this.onChange(e));
    this.sweepTimer = this.clock.setInterval(() => this.sweep(), this.sweepIntervalMs);
  }

  stop(): void {
    this.unsubscribe?.();
    this.sweepTimer?.cancel();
    for (const p of this.probes.values()) this.untrackProbe(p);
    this.probes.clear();
    this.deadlines.clear();
    this.reapable.clear();
  }

  get probing(): number {
    return this.probes.size;
  }

  get ttlTracked(): number {
    return this.deadlines.size;
  }

  /**
   * A TTL heartbeat: refreshes the deadline, and marks the instance healthy (or unhealthy,
   * when the instance reports itself failing) if that changes its status.
   */
  async heartbeat(service: string, id: string, report: HeartbeatReport = {}): Promise<InstanceRecord> {
    const rec = this.registry.mustGet(service, id);
    const check = rec.instance.check;
    if (check === null || check.type !== 'ttl') {
      throw new SkeinError('SKEIN_E_NO_TTL_CHECK', `instance "${id}" of service "${service}" has ${check === null ? 'no health check' : `a ${check.type} check`}, not a ttl check`, { field: 'id' });
    }
    this.heartbeats++;
    if (this.replicated !== null) {
      // The leader applies it (any replica takes heartbeats; this one may not be the leader).
      await this.replicated.beat(service, id, check.ttlMs, report);
      return rec;
    }
    this.deadlines.set(keyOf(service, id), { at: this.clock.now() + check.ttlMs, check });
    return this.applyBeat(rec, report);
  }

  /** The leader, replicated: a heartbeat key was written (a new lease, or a reported status). */
  beatSeen(service: string, id: string, report: HeartbeatReport): void {
    const rec = this.registry.get(service, id);
    if (rec === undefined || rec.instance.check?.type !== 'ttl') return;
    // Its lease keeps the TTL from now on: no deadline here.
    this.deadlines.delete(keyOf(service, id));
    this.applyBeat(rec, report).catch((e: unknown) => this.onError(e));
  }

  /** The leader, replicated: a heartbeat key's lease ran out (etcd deleted it). */
  beatExpired(service: string, id: string): void {
    const rec = this.registry.get(service, id);
    if (rec === undefined || rec.instance.check?.type !== 'ttl' || rec.status !== 'healthy') return;
    this.set(service, id, 'unhealthy', `TTL expired: no heartbeat within ${rec.instance.check.ttlMs}ms`);
  }

  private async applyBeat(rec: InstanceRecord, report: HeartbeatReport): Promise<InstanceRecord> {
    const { service, id } = rec.instance;
    const status = report.status ?? 'healthy';
    const reason = report.reason ?? (status === 'healthy' ? 'heartbeat received' : 'instance reported itself unhealthy');
    if (rec.status === status) return rec;
    return this.registry.setStatus(service, id, status, reason);
  }

  /** Milliseconds until a TTL instance expires (for tests and the API). */
  ttlRemaining(service: string, id: string): number | undefined {
    const d = this.deadlines.get(keyOf(service, id));
    return d === undefined ? undefined : d.at - this.clock.now();
  }

  private onChange(e: RegistryEvent): void {
    if (e.type === 'service') return;
    const key = keyOf(e.service, e.record.instance.id);
    if (e.type === 'remove') {
      const p = this.probes.get(key);
      if (p !== undefined) this.untrackProbe(p);
      this.probes.delete(key);
      this.deadlines.delete(key);
      this.reapable.delete(key);
      return;
    }
    this.track(e.record, this.clock.now());
  }

  /** Starts or refreshes what an instance's check needs. `ttlStart`: when its TTL starts counting. */
  private track(rec: InstanceRecord, ttlStart: number): void {
    const { service, id, check } = rec.instance;
    const key = keyOf(service, id);
    if (check?.deregisterAfterMs != null) this.reapable.add(key);
    else this.reapable.delete(key);
    if (check === null || check.type === 'ttl') {
      const p = this.probes.get(key);
      if (p !== undefined) {
        this.untrackProbe(p);
        this.probes.delete(key);
      }
      // A new instance, or a changed check, starts counting now; a status change keeps the deadline.
      const d = this.deadlines.get(key);
      if (check === null || this.replicated?.alive().has(key) === true) this.deadlines.delete(key);
      else if (d === undefined || rec.createRevision === rec.modRevision || (d.check !== check && JSON.stringify(d.check) !== JSON.stringify(check))) {
        this.deadlines.set(key, { at: ttlStart + check.ttlMs, check });
      }
      return;
    }
    this.deadlines.delete(key);
    const checkJson = JSON.stringify(check);
    const existing = this.probes.get(key);
    if (existing !== undefined && existing.checkJson === checkJson) return;
    if (existing !== undefined) this.untrackProbe(existing);
    const p: ProbeState = { key, service, id, checkJson, timer: null, passes: 0, failures: 0, running: false, stopped: false };
    this.probes.set(key, p);
    // The first check runs at once, so a new instance does not wait a whole interval.
    p.timer = this.clock.setTimeout(() => this.runProbe(p), 0);
  }

  private untrackProbe(p: ProbeState): void {
    p.stopped = true;
    p.timer?.cancel();
    p.timer = null;
  }

  private runProbe(p: ProbeState): void {
    if (p.stopped || p.running) return;
    const rec = this.registry.get(p.service, p.id);
    const check = rec?.instance.check;
    if (rec === undefined || check == null || check.type === 'ttl') return;
    p.running = true;
    this.probe(rec.instance, check).then(
      (r) => this.settle(p, check, r),
      (e: unknown) => this.settle(p, check, { ok: false, reason: `probe error: ${(e as Error).message}` }),
    );
  }

  private settle(p: ProbeState, check: HealthCheck, r: ProbeResult): void {
    p.running = false;
    if (p.stopped) return;
    this.onResult(check, r.ok);
    p.timer = this.clock.setTimeout(() => this.runProbe(p), check.intervalMs);
    const rec = this.registry.get(p.service, p.id);
    if (rec === undefined) return;
    if (r.ok) {
      p.passes++;
      p.failures = 0;
      if (rec.status !== 'healthy' && p.passes >= check.healthyThreshold) this.set(p.service, p.id, 'healthy', r.reason);
    } else {
      p.failures++;
      p.passes = 0;
      if (rec.status !== 'unhealthy' && p.failures >= check.unhealthyThreshold) this.set(p.service, p.id, 'unhealthy', r.reason);
    }
  }

  private set(service: string, id: string, status: HealthStatus, reason: string): void {
    this.registry.setStatus(service, id, status, reason).catch((e: unknown) => this.onError(e));
  }

  /** Expires TTL instances past their deadline and reaps long-unhealthy ones. */
  sweep(): void {
    const now = this.clock.now();
    for (const [key, deadline] of this.deadlines) {
      if (deadline.at > now) continue;
      const [service, id] = key.split('\u0000') as [string, string];
      const rec = this.registry.get(service, id);
      if (rec === undefined) {
        this.deadlines.delete(key);
        continue;
      }
      if (rec.status === 'healthy') {
        const ttl = rec.instance.check?.ttlMs ?? 0;
        this.set(service, id, 'unhealthy', `TTL expired: no heartbeat within ${ttl}ms`);
      }
    }
    for (const key of this.reapable) {
      const [service, id] = key.split('\u0000') as [string, string];
      const rec = this.registry.get(service, id);
      const after = rec?.instance.check?.deregisterAfterMs;
      if (rec === undefined || after == null) {
        this.reapable.delete(key);
        continue;
      }
      if (rec.status === 'unhealthy' && now - rec.since >= after) {
        this.reapable.delete(key);
        this.registry.deregister(service, id, { reaped: true }).catch((e: unknown) => this.onError(e));
      }
    }
  }
}
