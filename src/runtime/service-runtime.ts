/**
 * One service of a running mesh: its replica sets (one Supervisor per revision, like
 * Kubernetes' ReplicaSets under a Deployment), its revision history, its replicas and the
 * rollout moving it between revisions. MeshRunner owns the wiring (proxy listeners,
 * registration, the drain); this owns which revision runs how many replicas.
 *
 * Replica ids: the revision `skein up` started with keeps `<service>-<index>`; a replica set
 * made later for revision N has `<service>-r<N>-<index>`.
 */
import { revisionChanges, type MeshService, type RevisionField } from '../api/mesh.js';
import type { Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { RevisionHistory, withRevision, type Revision } from './revisions.js';
import { Rollout, type ReplicaSetView, type RolloutHost, type RolloutStatus, type RolloutStrategy } from './rollout.js';
import { CanaryStrategy, type CanaryIo } from './canary.js';
import type { ReplicaStatus, Supervisor } from './supervisor.js';

export interface ServiceRuntimeOptions {
  readonly service: MeshService;
  readonly clock: Clock;
  /** A supervisor for `svc` (a revision of the service) with replica ids `<idPrefix>-<index>`, not started. */
  makeSupervisor(svc: MeshService, idPrefix: string): Supervisor;
  /** A mesh event about this service (its type follows `fields.change`: see MeshRunner). */
  event(message: string, fields: Record<string, unknown>): void;
  /** The mesh side of canaries (the service's split, signals, webhooks); absent: canaries roll out as rolling updates. */
  readonly canary?: CanaryIo;
}

class ReplicaSet implements ReplicaSetView {
  constructor(
    readonly hash: string,
    private readonly history: RevisionHistory,
    private readonly createdAs: number,
    readonly svc: MeshService,
    readonly sup: Supervisor,
  ) {}

  revision(): number {
    return this.history.byHash(this.hash)?.number ?? this.createdAs;
  }
  replicas(): number {
    return this.sup.replicaCount;
  }
  readySince(): number[] {
    return this.sup
      .list()
      .map((r) => r.readySince)
      .filter((t): t is number => t !== null);
  }
  leaving(): number {
    return this.sup.leavingList().length;
  }
  scale(n: number): void {
    this.sup.scale(n).catch(() => undefined);
  }
}

export interface InstanceStatus {
  readonly id: string;
  readonly revision: number;
  readonly version: string;
  readonly state: string;
  readonly pid: number | null;
  readonly appPort: number | null;
  readonly restarts: number;
}

export interface ApplyResult {
  readonly service: string;
  /** Revision fields that changed (a rollout started), empty when none did. */
  readonly revisionFields: RevisionField[];
  readonly revision: number;
  readonly replicas: { from: number; to: number } | null;
}

export class ServiceRuntime implements RolloutHost {
  readonly history = new RevisionHistory();
  private all: ReplicaSet[] = [];
  private svc: MeshService;
  private stableHash = '';
  private rollout: Rollout | null = null;
  private pausedNow = false;
  private pokeQueued = false;

  constructor(private readonly o: ServiceRuntimeOptions) {
    this.svc = o.service;
  }

  get service(): string {
    return this.svc.name;
  }
  get spec(): MeshService {
    return this.svc;
  }
  desired(): number {
    return this.svc.replicas;
  }
  policy(): MeshService['rollout'] {
    return this.svc.rollout;
  }
  paused(): boolean {
    return this.pausedNow;
  }
  sets(): readonly ReplicaSetView[] {
    return this.all;
  }
  event(message: string, fields: Record<string, unknown>): void {
    this.o.event(message, fields);
  }

  /** Starts revision 1 with the service's replicas. */
  start(): void {
    const rev = this.history.record(this.svc, 'skein up', this.o.clock.now());
    const set = this.makeSet(rev, this.svc.name);
    this.stableHash = rev.hash;
    set.sup.start(this.svc.replicas);
  }

  /** Resolves when the first revision's replicas are all ready. */
  whenAllReady(): Promise<void> {
    return (this.all[0] as ReplicaSet).sup.whenAllReady();
  }

  private makeSet(rev: Revision, prefix: string): ReplicaSet {
    const svc = withRevision(this.svc, rev);
    const sup = this.o.makeSupervisor(svc, prefix);
    sup.on((e) => {
      if (e.type === 'ready' || e.type === 'stopped' || e.type === 'exited' || e.type === 'unready' || e.type === 'failed') this.poke();
    });
    const set = new ReplicaSet(rev.hash, this.history, rev.number, svc, sup);
    this.all.push(set);
    return set;
  }

  /** Reconciles the rollout soon (coalesced; never inside a supervisor's own event). */
  poke(): void {
    if (this.pokeQueued) return;
    this.pokeQueued = true;
    setImmediate(() => {
      this.pokeQueued = false;
      this.rollout?.reconcile();
    });
  }

  private rolloutTo(rev: Revision, cause: string, rollback: boolean): void {
    let set = this.all.find((s) => s.hash === rev.hash);
    if (set === undefined) {
      set = this.makeSet(rev, `${this.svc.name}-r${rev.number}`);
      set.sup.start(0);
    } else {
      // The target is the newest set: the others are "old", oldest first.
      this.all = [...this.all.filter((s) => s !== set), set];
    }
    this.rollout?.supersede();
    const canary = rollback ? null : this.canaryFor(set);
    this.rollout = new Rollout({ host: this, target: set, clock: this.o.clock, cause, rollback, ...(canary === null ? {} : { strategy: canary }) });
    this.rollout.start();
    canary?.start();
  }

  /**
   * The canary strategy for a rollout to `target`, when the service has one and it applies: one
   * stable set with replicas, and a new version to tell the canary's traffic and signals apart.
   * Otherwise null (a rolling update), with an event saying why when a canary was asked for.
   */
  private canaryFor(target: ReplicaSet): (RolloutStrategy & { start(): void }) | null {
    const policy = target.svc.canary;
    if (policy === null || this.o.canary === undefined) return null;
    const live = this.all.filter((s) => s !== target && s.replicas() > 0);
    const stable = live[0];
    let why: string | null = null;
    if (live.length !== 1 || stable === undefined) why = `${live.length} older revisions run replicas (a canary needs exactly one stable revision)`;
    else if (target.svc.version === '' || target.svc.version === stable.svc.version) why = `the new revision's version "${target.svc.version}" is not a new version (a canary's traffic and signals are told apart by version)`;
    if (why !== null || stable === undefined) {
      this.o.event(`${this.svc.name}: no canary for revision ${target.revision()}: ${why}; a rolling update instead`, { change: 'canary-skipped', revision: target.revision(), reason: why });
      return null;
    }
    return new CanaryStrategy({
      policy,
      host: this,
      target,
      stable,
      stableVersion: stable.svc.version,
      canaryVersion: target.svc.version,
      io: this.o.canary,
      clock: this.o.clock,
      onError: (e) => this.o.event(`${this.svc.name}: canary step failed, tried again next interval: ${(e as Error).message}`, { change: 'canary-error', revision: target.revision() }),
    });
  }

  /** A new spec from `skein rollout apply`: a rollout when its revision changed, a scale when replicas did. */
  apply(given: MeshService): ApplyResult {
    // Autoscaled: the autoscaler owns the replicas (kept, within the new min..max), not the file.
    const a = given.autoscale;
    const next = a === undefined ? given : Object.freeze({ ...given, replicas: Math.min(a.max, Math.max(a.min, this.svc.replicas)) });
    const fields = revisionChanges(this.history.latest.spec, next);
    const from = this.svc.replicas;
    this.svc = next;
    if (fields.length > 0) {
      const rev = this.history.record(next, `apply: ${fields.join(', ')} changed`, this.o.clock.now());
      this.rolloutTo(rev, rev.cause, false);
    } else if (from !== next.replicas) {
      this.resize(next.replicas);
    }
    return { service: next.name, revisionFields: fields, revision: this.history.latest.number, replicas: from === next.replicas ? null : { from, to: next.replicas } };
  }

  /** Changes the replicas; resolves when the surplus ones are gone (at once during a rollout, which takes them into account). */
  async scale(n: number): Promise<void> {
    this.svc = Object.freeze({ ...this.svc, replicas: n });
    await this.resize(n);
  }

  private async resize(n: number): Promise<void> {
    if (this.rollout?.active === true) {
      this.poke();
      return;
    }
    const current = this.all.find((s) => s.hash === this.history.latest.hash) ?? this.all.at(-1);
    if (current !== undefined) await current.sup.scale(n);
  }

  /** Rolls back to revision `to` (default: the one before the latest). */
  undo(to?: number): Revision {
    const target = this.history.undoTarget(this.svc.name, to);
    if (target.hash === this.history.latest.hash) {
      throw new SkeinError('SKEIN_E_CONFLICT', `service "${this.svc.name}" runs revision ${target.number} already`, { field: 'toRevision' });
    }
    const was = target.number;
    const rev = this.history.record(target.spec, `undo to revision ${was}`, this.o.clock.now());
    this.svc = withRevision(this.svc, rev);
    this.rolloutTo(rev, rev.cause, false);
    return rev;
  }

  /** The progress deadline passed: back to the revision that last rolled out completely. */
  rollback(reason: string): void {
    const stable = this.all.find((s) => s.hash === this.stableHash);
    const spec = this.history.byHash(this.stableHash)?.spec ?? stable?.svc;
    if (spec === undefined) return;
    const rev = this.history.record(spec, `rollback: ${reason}`, this.o.clock.now());
    this.svc = withRevision(this.svc, rev);
    this.rolloutTo(rev, rev.cause, true);
  }

  retire(hash: string): void {
    const set = this.all.find((s) => s.hash === hash);
    if (set === undefined || set.replicas() + set.leaving() > 0 || this.rollout?.target === set) return;
    this.all = this.all.filter((s) => s !== set);
    void set.sup.stop();
  }

  completed(hash: string): void {
    this.stableHash = hash;
  }

  pause(): void {
    if (this.pausedNow) throw new SkeinError('SKEIN_E_CONFLICT', `the rollouts of service "${this.svc.name}" are paused already`, { field: 'service' });
    this.pausedNow = true;
    this.o.event(`${this.svc.name}: rollouts paused`, { change: 'rollout-paused', revision: this.history.latest.number });
    this.poke();
  }

  resume(): void {
    if (!this.pausedNow) throw new SkeinError('SKEIN_E_CONFLICT', `the rollouts of service "${this.svc.name}" are not paused`, { field: 'service' });
    this.pausedNow = false;
    this.o.event(`${this.svc.name}: rollouts resumed`, { change: 'rollout-resumed', revision: this.history.latest.number });
    this.poke();
  }

  rolloutStatus(): { revision: number; hash: string; paused: boolean; stableRevision: number | null; rollout: RolloutStatus | null } {
    const latest = this.history.latest;
    return { revision: latest.number, hash: latest.hash, paused: this.pausedNow, stableRevision: this.history.byHash(this.stableHash)?.number ?? null, rollout: this.rollout?.status() ?? null };
  }

  revisions(): Array<{ number: number; hash: string; time: string; cause: string; version: string; current: boolean; replicas: number }> {
    const latest = this.history.latest.hash;
    return this.history.list().map((r) => ({
      number: r.number,
      hash: r.hash,
      time: new Date(r.time).toISOString(),
      cause: r.cause,
      version: r.spec.version,
      current: r.hash === latest,
      replicas: this.all.find((s) => s.hash === r.hash)?.replicas() ?? 0,
    }));
  }

  /** Replicas asked for (across revisions), those ready, and every live replica, leaving ones included. */
  replicaStatus(): { replicas: number; ready: number; instances: InstanceStatus[] } {
    let replicas = 0;
    let ready = 0;
    const instances: InstanceStatus[] = [];
    const row = (set: ReplicaSet, r: ReplicaStatus): InstanceStatus => ({ id: r.id, revision: set.revision(), version: set.svc.version, state: r.state, pid: r.pid, appPort: r.port, restarts: r.restarts });
    for (const set of this.all) {
      const list = set.sup.list();
      replicas += list.length;
      ready += set.sup.readyCount;
      for (const r of list) instances.push(row(set, r));
      for (const r of set.sup.leavingList()) instances.push(row(set, r));
    }
    return { replicas, ready, instances };
  }

  // ---- for the autoscaler (autoscale.ts) ----

  /** The autoscaling policy now (it follows `skein apply`); undefined: replicas are fixed. */
  autoscale(): MeshService['autoscale'] {
    return this.svc.autoscale;
  }

  /** Ready replicas of the latest revision: the ones the autoscaler counts. */
  currentReady(): number {
    return this.all.find((s) => s.hash === this.history.latest.hash)?.sup.readyCount ?? 0;
  }

  /** A rollout is moving the service (progressing, paused or past its deadline): the autoscaler holds. */
  rolloutActive(): boolean {
    return this.rollout?.active === true;
  }

  async stop(): Promise<void> {
    this.rollout?.stop();
    await Promise.all(this.all.map((s) => s.sup.stop()));
  }

  killAll(): void {
    for (const s of this.all) s.sup.killAll();
  }
}
