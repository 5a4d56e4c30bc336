/**
 * The rollout controller: moves a service from the replica sets it runs to the one of a target
 * revision, one reconciliation at a time, under a strategy. The rolling update (rollout-plan.ts)
 * is the strategy today; a canary is another (it plans replicas the same way and adds traffic
 * weights and an analysis between steps). The controller owns what every strategy shares:
 * pause and resume, the progress deadline and the automatic rollback it triggers, completion,
 * and a mesh event for every step.
 *
 * It reconciles when a replica changes state (the host calls `poke`) and on a Clock tick (for
 * minReady and the deadline), so tests drive it with a ManualClock.
 */
import type { CanaryStatus } from './canary.js';
import { formatDuration } from '../core/duration.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import type { MeshRollout } from '../api/mesh.js';
import { rolloutBounds } from '../api/mesh.js';
import { planStep, rolloutDone, type RolloutInput, type RolloutStep, type SetCounts } from './rollout-plan.js';

/** How a rollout moves replicas; `kind` names it in status and events. */
export interface RolloutStrategy {
  readonly kind: string;
  plan(input: RolloutInput): RolloutStep;
  done(input: RolloutInput): boolean;
  /** An analysis owns the timeline now (a canary's): the progress deadline does not run. */
  analysing?(): boolean;
  /** The rollout ended (complete, superseded, stopped): the strategy's own timers stop. */
  stop?(): void;
  /** What the strategy adds to the rollout's status (a canary's weight and checks: `canary`). */
  status?(): CanaryStatus;
}

export const rollingUpdate: RolloutStrategy = { kind: 'RollingUpdate', plan: planStep, done: rolloutDone };

/** One revision's replicas, as the controller sees and scales them. */
export interface ReplicaSetView {
  readonly hash: string;
  /** Its revision's number now (an undo renumbers a revision). */
  revision(): number;
  /** Replicas it is asked to run. */
  replicas(): number;
  /** When each of its ready replicas became ready (clock ms). */
  readySince(): number[];
  /** Its replicas being drained and stopped whose process has not exited. */
  leaving(): number;
  scale(n: number): void;
}

/** What the controller drives: one service's replica sets. */
export interface RolloutHost {
  readonly service: string;
  desired(): number;
  policy(): MeshRollout;
  paused(): boolean;
  /** Every replica set, oldest first, the target's included. */
  sets(): readonly ReplicaSetView[];
  /** The rollout to this set completed: it is the stable revision (what a rollback returns to). */
  completed(hash: string): void;
  /** Drops a set that has no replicas left. */
  retire(hash: string): void;
  /** The deadline passed without progress: roll back (the host records the revision and starts a rollout to it). */
  rollback(reason: string): void;
  event(message: string, fields: Record<string, unknown>): void;
}

export type RolloutPhase = 'progressing' | 'paused' | 'complete' | 'deadline-exceeded' | 'superseded';

export interface RolloutStatus {
  readonly strategy: string;
  readonly revision: number;
  readonly hash: string;
  readonly phase: RolloutPhase;
  readonly cause: string;
  readonly rollback: boolean;
  readonly startedAt: string;
  readonly lastProgressAt: string;
  readonly deadlineAt: string | null;
  readonly maxSurge: number;
  readonly maxUnavailable: number;
  readonly replicas: { desired: number; updated: number; updatedAvailable: number; old: number; available: number; leaving: number };
  readonly message: string;
  /** A canary's analysis: its weight, failed checks, the last steps with their checks. */
  readonly canary?: CanaryStatus;
}

export const ROLLOUT_TICK_MS = 200;

export interface RolloutOptions {
  readonly host: RolloutHost;
  readonly target: ReplicaSetView;
  readonly clock: Clock;
  readonly cause: string;
  /** This rollout is itself a rollback: its deadline does not roll back again. */
  readonly rollback: boolean;
  readonly strategy?: RolloutStrategy;
}

export class Rollout {
  private phaseNow: RolloutPhase = 'progressing';
  private readonly startedAt: number;
  private lastProgressAt: number;
  private signature = '';
  private lastStep = '';
  private timer: TimerHandle | null = null;
  private readonly strategy: RolloutStrategy;
  private message = 'started';
  private wasPaused = false;

  constructor(private readonly o: RolloutOptions) {
    this.strategy = o.strategy ?? rollingUpdate;
    this.startedAt = o.clock.now();
    this.lastProgressAt = this.startedAt;
  }

  get target(): ReplicaSetView {
    return this.o.target;
  }

  get phase(): RolloutPhase {
    return this.phaseNow;
  }

  get active(): boolean {
    return this.phaseNow === 'progressing' || this.phaseNow === 'paused' || this.phaseNow === 'deadline-exceeded';
  }

  start(): void {
    const { host, target } = this.o;
    const from = host.sets().filter((s) => s !== target && s.replicas() + s.leaving() > 0).map((s) => s.revision());
    const b = this.bounds();
    host.event(`${host.service}: rolling out revision ${target.revision()}${from.length > 0 ? ` over revision ${from.join(', ')}` : ''} (${this.o.cause}); maxSurge ${b.surge}, maxUnavailable ${b.unavailable}`, {
      change: 'rollout-started',
      revision: target.revision(),
      from,
      cause: this.o.cause,
      strategy: this.strategy.kind,
      rollback: this.o.rollback,
      maxSurge: b.surge,
      maxUnavailable: b.unavailable,
    });
    this.timer = this.o.clock.setInterval(() => this.reconcile(), ROLLOUT_TICK_MS);
    this.reconcile();
  }

  /** Another rollout took over (a newer apply, an undo): stop without touching replicas. */
  supersede(): void {
    if (!this.active) return;
    this.finish('superseded', 'superseded by a newer rollout');
  }

  /** Stops the timer (the mesh is stopping). */
  stop(): void {
    this.timer?.cancel();
    this.timer = null;
    this.strategy.stop?.();
  }

  private bounds(): { surge: number; unavailable: number } {
    return rolloutBounds(this.o.host.desired(), this.o.host.policy());
  }

  private input(now: number): RolloutInput {
    const { host, target } = this.o;
    const minReady = host.policy().minReadyMs;
    const counts = (s: ReplicaSetView): SetCounts => ({ replicas: s.replicas(), available: s.readySince().filter((t) => now - t >= minReady).length });
    const others = host.sets().filter((s) => s !== target);
    const b = this.bounds();
    return {
      desired: host.desired(),
      surge: b.surge,
      unavailable: b.unavailable,
      next: counts(target),
      old: others.map(counts),
      leaving: host.sets().reduce((a, s) => a + s.leaving(), 0),
    };
  }

  /** One reconciliation: plan, scale, check the deadline and completion. */
  reconcile(): void {
    if (!this.active) return;
    const { host, target, clock } = this.o;
    const now = clock.now();
    if (host.paused()) {
      if (!this.wasPaused) {
        this.wasPaused = true;
        this.phaseNow = 'paused';
      }
      return;
    }
    if (this.wasPaused) {
      // The deadline does not run while paused (as in Kubernetes).
      this.wasPaused = false;
      this.phaseNow = 'progressing';
      this.lastProgressAt = now;
    }
    const input = this.input(now);
    const others = host.sets().filter((s) => s !== target);
    const sig = `${input.next.replicas}/${input.next.available}/${input.old.map((o) => o.replicas).join(',')}`;
    if (sig !== this.signature || this.strategy.analysing?.() === true) {
      this.signature = sig;
      this.lastProgressAt = now;
    }
    if (this.strategy.done(input)) {
      for (const s of others) host.retire(s.hash);
      this.finish('complete', `revision ${target.revision()} is rolled out: ${input.desired} of ${input.desired} replicas available`);
      return;
    }
    const step = this.strategy.plan(input);
    if (step.next !== input.next.replicas) target.scale(step.next);
    others.forEach((s, i) => {
      const n = step.old[i] as number;
      if (n !== s.replicas()) s.scale(n);
    });
    const stepText = [`revision ${target.revision()}: ${step.next}`, ...others.map((s, i) => `revision ${s.revision()}: ${step.old[i]}`)].join(', ');
    if (stepText !== this.lastStep) {
      this.lastStep = stepText;
      const after = this.input(now);
      this.message = `${stepText} (available ${after.next.available + after.old.reduce((a, o) => a + o.available, 0)} of ${input.desired}, ${after.leaving} draining)`;
      host.event(`${host.service}: rollout step, ${this.message}`, {
        change: 'rollout-step',
        revision: target.revision(),
        updated: step.next,
        old: others.map((s, i) => ({ revision: s.revision(), replicas: step.old[i] })),
      });
    }
    for (const s of others) if (s.replicas() === 0 && s.leaving() === 0) host.retire(s.hash);
    const deadline = host.policy().progressDeadlineMs;
    if (this.phaseNow === 'progressing' && now - this.lastProgressAt >= deadline) {
      const why = `revision ${target.revision()} made no progress for ${formatDuration(deadline)} (progressDeadline): ${input.next.available} of ${input.next.replicas} new replicas available`;
      this.phaseNow = 'deadline-exceeded';
      this.message = why;
      if (this.o.rollback) {
        host.event(`${host.service}: rollback stalled: ${why}; replicas stay as they are`, { change: 'rollout-failed', revision: target.revision(), reason: why });
      } else {
        host.event(`${host.service}: ${why}; rolling back`, { change: 'rollout-deadline', revision: target.revision(), reason: why });
        this.finish('deadline-exceeded', why);
        host.rollback(why);
      }
    }
  }

  private finish(phase: RolloutPhase, message: string): void {
    this.phaseNow = phase;
    this.message = message;
    this.stop();
    if (phase === 'complete') {
      this.o.host.completed(this.o.target.hash);
      this.o.host.event(`${this.o.host.service}: ${message}`, { change: 'rollout-complete', revision: this.o.target.revision(), tookMs: this.o.clock.now() - this.startedAt });
    }
  }

  status(): RolloutStatus {
    const now = this.o.clock.now();
    const input = this.input(now);
    const deadlineAt = this.phaseNow === 'progressing' ? new Date(this.lastProgressAt + this.o.host.policy().progressDeadlineMs).toISOString() : null;
    return {
      strategy: this.strategy.kind,
      revision: this.o.target.revision(),
      hash: this.o.target.hash,
      phase: this.phaseNow,
      cause: this.o.cause,
      rollback: this.o.rollback,
      startedAt: new Date(this.startedAt).toISOString(),
      lastProgressAt: new Date(this.lastProgressAt).toISOString(),
      deadlineAt,
      maxSurge: input.surge,
      maxUnavailable: input.unavailable,
      replicas: {
        desired: input.desired,
        updated: input.next.replicas,
        updatedAvailable: input.next.available,
        old: input.old.reduce((a, o) => a + o.replicas, 0),
        available: input.next.available + input.old.reduce((a, o) => a + o.available, 0),
        leaving: input.leaving,
      },
      message: this.message,
      ...(this.strategy.status === undefined ? {} : { canary: this.strategy.status() }),
    };
  }
}
