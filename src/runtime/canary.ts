/**
 * The canary strategy of a rollout (docs/deployments.md "Canaries"): the new revision starts
 * beside the stable one with a few replicas; once they are ready, every `interval` the analysis
 * (canary-analysis.ts) judges the canary's own golden signals and webhooks, and its decision is
 * applied here:
 *
 *   set-weight  the service's split between the two versions moves (a Service `backends` write:
 *               the proxies shift traffic without dropping a connection or a request)
 *   hold        nothing moves; the event says which check failed, or what is awaited
 *   promote     the split is removed and the rest of the rollout is a rolling update: the canary's
 *               revision grows to every replica, the stable one's replicas drain
 *   rollback    the canary's weight goes to 0 at once, its replicas are drained and stopped, then
 *               the split is removed and the service returns to its stable revision
 *
 * Until the canary's replicas are ready the rollout's progress deadline runs (a canary that never
 * becomes ready is rolled back by it); once the analysis runs, its threshold bounds the time.
 * Every step is a mesh event of type `canary` with the checks' values against their bounds.
 */
import type { CanaryPolicy, Webhook, WebhookType } from '../api/canary.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { CanaryAnalysis, type AnalysisStep, type CanaryPhase, type Decision, type IntervalSignals, type WebhookOutcome } from './canary-analysis.js';
import { planStep, rolloutDone, type RolloutInput, type RolloutStep } from './rollout-plan.js';
import type { ReplicaSetView, RolloutHost, RolloutStrategy } from './rollout.js';

/** The split a canary sets on its service: the canary's weight, the rest to the stable version. */
export interface CanarySplit {
  readonly stable: string;
  readonly canary: string;
  readonly canaryWeight: number;
}

/** What a canary needs from the mesh: the service's split, the canary's signals, webhooks. */
export interface CanaryIo {
  /** Writes the service's split (null: none, the service's own again). */
  setSplit(split: CanarySplit | null): Promise<void>;
  /** The canary version's requests over the last `ms` (at least a scrape interval); null: none seen. */
  signals(version: string, ms: number): Promise<IntervalSignals | null>;
  /** Calls a webhook; never rejects (a failure is an outcome). */
  webhook(w: Webhook, body: Record<string, unknown>): Promise<WebhookOutcome>;
}

/**
 * A canary's status on the wire: the `canary` of a rollout's status (GET
 * /v1/mesh/services/{s}/rollout, `skein rollout status`, the dashboard's Deployment panel).
 * Each step's checks carry the metric (`check`), the value measured and its threshold in one
 * unit (requests; a rate 0..1; ms), whether it passed (`ok`) and a sentence (`text`).
 */
export type CanaryStatus = {
  /** The analysis' phase, or 'waiting for its replicas' before the analysis starts. */
  readonly phase: CanaryPhase | 'waiting for its replicas';
  /** The canary's share of the traffic now, percent (the stable version has the rest). */
  readonly weight: number;
  /** Failed checks so far (cumulative); at `threshold` the canary is rolled back. */
  readonly failedChecks: number;
  readonly threshold: number;
  /** The stable version and the canary's. */
  readonly stable: string;
  readonly version: string;
  readonly lastDecision: Decision | null;
  /** The last 10 steps, oldest first; a step's `time` is ms since the epoch. */
  readonly steps: readonly AnalysisStep[];
};

type Mode = 'starting' | 'analysis' | 'promoting' | 'rolling-back' | 'ended';

export interface CanaryOptions {
  readonly policy: CanaryPolicy;
  readonly host: RolloutHost;
  readonly target: ReplicaSetView;
  readonly stable: ReplicaSetView;
  readonly stableVersion: string;
  readonly canaryVersion: string;
  readonly io: CanaryIo;
  readonly clock: Clock;
  /** Something went wrong talking to the mesh (logged; the next interval tries again). */
  readonly onError?: (e: unknown) => void;
}

/** Replicas of the canary while it is analysed: enough for its largest share of the traffic. */
export function canaryReplicas(desired: number, maxWeight: number): number {
  return Math.max(1, Math.ceil((desired * maxWeight) / 100));
}

export class CanaryStrategy implements RolloutStrategy {
  readonly kind = 'Canary';
  readonly analysis: CanaryAnalysis;
  private mode: Mode = 'starting';
  private timer: TimerHandle | null = null;
  private busy = false;
  private splitSet = false;
  private lastDecision: Decision | null = null;

  constructor(private readonly o: CanaryOptions) {
    this.analysis = new CanaryAnalysis(o.policy);
  }

  /** Starts the analysis' clock (the rollout calls plan/done on its own ticks). */
  start(): void {
    const { host, target, policy } = this.o;
    host.event(`${host.service}: canary of revision ${target.revision()} (version ${this.o.canaryVersion}) beside version ${this.o.stableVersion}: up to ${policy.maxWeight}% in steps of ${policy.stepWeight}% every ${policy.intervalMs} ms`, {
      change: 'canary-started',
      revision: target.revision(),
      stable: this.o.stableVersion,
      canary: this.o.canaryVersion,
      replicas: canaryReplicas(host.desired(), policy.maxWeight),
    });
    this.timer = this.o.clock.setInterval(() => void this.tick(), policy.intervalMs);
  }

  plan(input: RolloutInput): RolloutStep {
    if (this.mode === 'promoting') return planStep(input);
    const keep = input.old.map((o) => o.replicas);
    if (this.mode === 'rolling-back' || this.mode === 'ended') return { next: 0, old: keep };
    return { next: canaryReplicas(input.desired, this.o.policy.maxWeight), old: keep };
  }

  done(input: RolloutInput): boolean {
    return this.mode === 'promoting' && rolloutDone(input);
  }

  analysing(): boolean {
    return this.mode === 'rolling-back' || (this.mode === 'analysis' && this.analysis.history.length > 0);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
    // Superseded (a newer apply, an undo) or the mesh stops: never leave the service split
    // between versions a later rollout does not run.
    // A failed write is reported, never an unhandled rejection (the control plane may be going away too).
    if (this.mode !== 'ended' && this.splitSet) this.split(null).catch((e: unknown) => this.o.onError?.(e));
    this.mode = 'ended';
  }

  status(): CanaryStatus {
    return {
      phase: this.mode === 'starting' ? 'waiting for its replicas' : this.analysis.phase,
      weight: this.analysis.weight,
      failedChecks: this.analysis.failedChecks,
      threshold: this.o.policy.threshold,
      stable: this.o.stableVersion,
      version: this.o.canaryVersion,
      lastDecision: this.lastDecision,
      steps: this.analysis.history.slice(-10),
    };
  }

  private async split(s: CanarySplit | null): Promise<void> {
    await this.o.io.setSplit(s);
    this.splitSet = s !== null;
  }

  /** One interval. Ticks never overlap: a slow webhook delays the next step, it does not double it. */
  private async tick(): Promise<void> {
    if (this.busy || this.mode === 'ended' || this.mode === 'promoting') return;
    this.busy = true;
    try {
      await this.step();
    } catch (e) {
      this.o.onError?.(e);
    } finally {
      this.busy = false;
    }
  }

  private async step(): Promise<void> {
    const { host, target, clock, policy } = this.o;
    if (this.mode === 'rolling-back') {
      // The canary's replicas are gone: the split goes, and the service returns to its stable revision.
      if (target.replicas() + target.leaving() > 0) return;
      await this.split(null);
      this.mode = 'ended';
      this.timer?.cancel();
      this.timer = null;
      host.rollback(`canary of revision ${target.revision()} rolled back: ${this.lastDecision?.reason ?? ''}`);
      return;
    }
    if (this.mode === 'starting') {
      if (target.readySince().length < canaryReplicas(host.desired(), policy.maxWeight)) return;
      this.mode = 'analysis';
    }
    const due = this.analysis.hooksDue();
    const hooks = await this.hooks(due, this.analysis.phase);
    const signals = this.analysis.phase === 'initializing' ? null : await this.o.io.signals(this.o.canaryVersion, policy.intervalMs);
    const d = this.analysis.step(clock.now(), signals, hooks);
    this.lastDecision = d;
    await this.apply(d);
  }

  private async hooks(types: readonly WebhookType[], phase: string): Promise<WebhookOutcome[]> {
    const ws = this.o.policy.webhooks.filter((w) => types.includes(w.type));
    return Promise.all(ws.map((w) => this.o.io.webhook(w, this.payload(w, phase))));
  }

  private payload(w: Webhook, phase: string): Record<string, unknown> {
    return { name: this.o.host.service, namespace: 'default', phase, type: w.type, revision: this.o.target.revision(), version: this.o.canaryVersion, stableVersion: this.o.stableVersion, weight: this.analysis.weight, metadata: w.metadata };
  }

  private async apply(d: Decision): Promise<void> {
    const { host, target } = this.o;
    const step = this.analysis.history.at(-1);
    const fields = { revision: target.revision(), weight: this.analysis.weight, failedChecks: this.analysis.failedChecks, checks: step?.checks ?? [], reason: d.reason };
    const s = host.service;
    switch (d.action) {
      case 'set-weight':
        await this.split({ stable: this.o.stableVersion, canary: this.o.canaryVersion, canaryWeight: d.weight });
        host.event(`${s}: canary at ${d.weight}% (${d.reason})`, { change: 'canary-weight', ...fields });
        return;
      case 'hold':
        host.event(`${s}: canary held at ${d.weight}%: ${d.reason}`, { change: d.reason.startsWith('waiting') ? 'canary-waiting' : 'canary-failed-check', ...fields });
        return;
      case 'promote':
        this.mode = 'promoting';
        await this.split(null);
        host.event(`${s}: canary of revision ${target.revision()} promoted (${d.reason}); rolling it out to every replica`, { change: 'canary-promoted', ...fields });
        void this.hooks(['post-rollout'], 'promoted');
        return;
      case 'rollback':
        this.mode = 'rolling-back';
        // Weight 0 at once; the replicas drain (deregistered first) and stop.
        await this.split({ stable: this.o.stableVersion, canary: this.o.canaryVersion, canaryWeight: 0 });
        host.event(`${s}: canary of revision ${target.revision()} rolled back: ${d.reason}`, { change: 'canary-rolled-back', ...fields });
        target.scale(0);
        void this.hooks(['post-rollout'], 'rolled-back');
        return;
    }
  }
}
