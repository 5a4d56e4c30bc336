/**
 * A canary's analysis (Flagger's model, docs/deployments.md "Canaries"): decisions only, no I/O.
 * Its driver calls `step()` once per interval with the canary's own golden signals over that
 * interval (the proxies' outbound requests answered by the canary's version) and the outcomes of
 * the webhooks `hooksDue()` asked for, and applies the decision: the canary's traffic weight,
 * promotion, or rollback.
 *
 *   initializing: pre-rollout hooks must pass before any traffic goes to the canary
 *   progressing:  each interval checks requests >= minRequests (too little traffic to judge is a
 *                 failed check, not a pass), success rate >= min, p99 <= max, the rollout hooks;
 *                 all pass: weight += stepWeight (up to maxWeight); once at maxWeight, a passed
 *                 interval with every confirm-promotion hook passing promotes (a confirm-promotion
 *                 hook that does not pass holds the canary at maxWeight: not a failure)
 *   any failure:  failedChecks += 1 (cumulative, never reset, as in Flagger); at `threshold` the
 *                 canary is rolled back (weight 0 at once)
 *   abort:        an interval whose error rate is above `abortErrorRate` (with at least
 *                 minRequests requests) rolls back at once, whatever the count
 *   rollback hook: a rollback webhook that answers 2xx rolls back at once (a manual abort)
 *
 * Every step is kept (the last 100) with each check's value against its threshold, so that
 * `skein rollout status`, the dashboard and the events say why a canary failed.
 */
import type { CanaryPolicy, WebhookType } from '../api/canary.js';

export type CanaryPhase = 'initializing' | 'progressing' | 'promoted' | 'rolled-back';

/** The canary's signals over the last interval (null: none seen). */
export interface IntervalSignals {
  readonly requests: number;
  readonly failures: number;
  /** ms; null without requests. */
  readonly p99Ms: number | null;
}

export interface WebhookOutcome {
  readonly name: string;
  readonly type: WebhookType;
  /** 2xx in time. */
  readonly ok: boolean;
  /** What happened: `HTTP 500`, `timeout after 10000 ms`, `ECONNREFUSED`. */
  readonly detail: string;
}

export interface Check {
  readonly check: 'requests' | 'success-rate' | 'p99' | 'error-rate' | 'webhook';
  /** The webhook's name (webhook checks). */
  readonly name?: string;
  /** The value measured: requests, a rate 0..1, ms; null when there was none. */
  readonly value: number | null;
  /** Its bound, in the same unit. */
  readonly threshold: number;
  readonly ok: boolean;
  /** One line a person reads: `success rate 50.0% < 99.0%`. */
  readonly text: string;
}

export type Decision =
  | { readonly action: 'set-weight'; readonly weight: number; readonly reason: string }
  | { readonly action: 'hold'; readonly weight: number; readonly reason: string }
  | { readonly action: 'promote'; readonly reason: string }
  | { readonly action: 'rollback'; readonly reason: string };

export interface AnalysisStep {
  readonly n: number;
  readonly time: number;
  /** The canary's weight during the interval. */
  readonly weight: number;
  readonly checks: readonly Check[];
  /** Failed checks so far, this step's included. */
  readonly failedChecks: number;
  readonly decision: Decision;
}

const MAX_HISTORY = 100;
const pct = (r: number) => `${(r * 100).toFixed(1)}%`;

export class CanaryAnalysis {
  phase: CanaryPhase = 'initializing';
  /** The canary's traffic weight, percent. */
  weight = 0;
  failedChecks = 0;
  readonly history: AnalysisStep[] = [];
  private n = 0;

  constructor(readonly policy: CanaryPolicy) {}

  get done(): boolean {
    return this.phase === 'promoted' || this.phase === 'rolled-back';
  }

  /** The webhooks to call before the next step (their outcomes go into `step`). */
  hooksDue(): WebhookType[] {
    if (this.done) return [];
    if (this.phase === 'initializing') return ['pre-rollout', 'rollback'];
    return this.weight >= this.policy.maxWeight ? ['rollout', 'confirm-promotion', 'rollback'] : ['rollout', 'rollback'];
  }

  /** One interval: `signals` of the canary over it (ignored while initializing), the hooks' outcomes. */
  step(now: number, signals: IntervalSignals | null, hooks: readonly WebhookOutcome[] = []): Decision {
    if (this.done) throw new Error(`the canary's analysis is over (${this.phase})`);
    const p = this.policy;
    const checks: Check[] = [];
    const hook = (o: WebhookOutcome): Check => ({ check: 'webhook', name: o.name, value: null, threshold: 0, ok: o.ok, text: `${o.type} webhook "${o.name}": ${o.detail}` });
    const weight = this.weight;
    const manual = hooks.find((o) => o.type === 'rollback' && o.ok);
    if (manual !== undefined) {
      checks.push({ ...hook(manual), ok: false });
      return this.record(now, weight, checks, this.rollback(`the rollback webhook "${manual.name}" asked for it`));
    }
    if (this.phase === 'initializing') {
      const pre = hooks.filter((o) => o.type === 'pre-rollout');
      checks.push(...pre.map(hook));
      const bad = pre.find((o) => !o.ok);
      if (bad === undefined) {
        this.phase = 'progressing';
        this.weight = Math.min(p.stepWeight, p.maxWeight);
        return this.record(now, weight, checks, { action: 'set-weight', weight: this.weight, reason: pre.length === 0 ? 'the canary is ready' : 'the canary is ready and the pre-rollout webhooks passed' });
      }
      return this.record(now, weight, checks, this.failed(`pre-rollout webhook "${bad.name}": ${bad.detail}`));
    }
    // The canary's own signals over the interval.
    const requests = signals?.requests ?? 0;
    const failures = signals?.failures ?? 0;
    const enough = requests >= p.minRequests;
    checks.push({ check: 'requests', value: requests, threshold: p.minRequests, ok: enough, text: enough ? `${requests} requests` : `too little traffic to judge: ${requests} requests < ${p.minRequests}` });
    if (enough) {
      const errorRate = failures / requests;
      if (errorRate > p.abortErrorRate) {
        checks.push({ check: 'error-rate', value: errorRate, threshold: p.abortErrorRate, ok: false, text: `error rate ${pct(errorRate)} > ${pct(p.abortErrorRate)}: aborted at once` });
        return this.record(now, weight, checks, this.rollback(`error rate ${pct(errorRate)} > ${pct(p.abortErrorRate)} in one interval`));
      }
      const success = 1 - errorRate;
      checks.push({ check: 'success-rate', value: success, threshold: p.minSuccessRate, ok: success >= p.minSuccessRate, text: `success rate ${pct(success)} ${success >= p.minSuccessRate ? '>=' : '<'} ${pct(p.minSuccessRate)}` });
      const p99 = signals?.p99Ms ?? null;
      const fast = p99 !== null && p99 <= p.maxP99Ms;
      checks.push({ check: 'p99', value: p99, threshold: p.maxP99Ms, ok: fast, text: `p99 ${p99 === null ? 'unknown' : `${p99.toFixed(1)} ms`} ${fast ? '<=' : '>'} ${p.maxP99Ms} ms` });
    }
    checks.push(...hooks.filter((o) => o.type === 'rollout').map(hook));
    const bad = checks.find((c) => !c.ok);
    if (bad !== undefined) return this.record(now, weight, checks, this.failed(bad.text));
    if (this.weight < p.maxWeight) {
      this.weight = Math.min(this.weight + p.stepWeight, p.maxWeight);
      return this.record(now, weight, checks, { action: 'set-weight', weight: this.weight, reason: `every check passed at weight ${weight}` });
    }
    const confirm = hooks.filter((o) => o.type === 'confirm-promotion');
    checks.push(...confirm.map(hook));
    const waiting = confirm.find((o) => !o.ok);
    if (waiting !== undefined) {
      return this.record(now, weight, checks, { action: 'hold', weight: this.weight, reason: `waiting for the confirm-promotion webhook "${waiting.name}" (${waiting.detail})` });
    }
    this.phase = 'promoted';
    return this.record(now, weight, checks, { action: 'promote', reason: `every check passed at the maximum weight ${p.maxWeight}` });
  }

  /** Rolled back from outside (a missed progress deadline, `skein rollout undo`). */
  abort(now: number, reason: string): Decision {
    if (this.done) throw new Error(`the canary's analysis is over (${this.phase})`);
    return this.record(now, this.weight, [], this.rollback(reason));
  }

  private failed(why: string): Decision {
    this.failedChecks++;
    if (this.failedChecks >= this.policy.threshold) return this.rollback(`${this.failedChecks} failed checks (threshold ${this.policy.threshold}); the last: ${why}`);
    return { action: 'hold', weight: this.weight, reason: `failed check ${this.failedChecks} of ${this.policy.threshold}: ${why}` };
  }

  private rollback(reason: string): Decision {
    this.phase = 'rolled-back';
    this.weight = 0;
    return { action: 'rollback', reason };
  }

  private record(time: number, weight: number, checks: Check[], decision: Decision): Decision {
    this.history.push(Object.freeze({ n: ++this.n, time, weight, checks: Object.freeze(checks), failedChecks: this.failedChecks, decision }));
    if (this.history.length > MAX_HISTORY) this.history.shift();
    return decision;
  }
}
