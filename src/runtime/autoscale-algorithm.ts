/**
 * The autoscaler's decision, without I/O or timers: Kubernetes' HorizontalPodAutoscaler
 * (pkg/controller/podautoscaler: replica_calculator.go, horizontal.go's
 * stabilizeRecommendationWithBehaviors and convertDesiredReplicasWithBehaviorRate) on the
 * mesh's own signals. One call per decision; the state it returns goes into the next call.
 *
 *   1. Out of [min, max] now: back inside it, whatever the metric says.
 *   2. No metric, or no ready replica of the current revision: no recommendation (a missing
 *      metric never scales down).
 *   3. The recommendation. rps and inFlight are the service's totals; per ready replica of the
 *      current revision they are `metric / ready`, and the ratio to the target decides:
 *      within the tolerance (|ratio - 1| <= 0.1) the replicas stay; otherwise
 *      ceil(ready x ratio) = ceil(metric / target) (HPA's formula).
 *      p99 is not proportional to replicas (a lightly loaded service is fast however few its
 *      replicas are), yet HPA treats every metric as a ratio. Skein scales up as HPA does
 *      (ceil(ready x p99 / target)) and down one replica at a time when p99 is under
 *      target x (1 - tolerance), so a quiet, fast service is not cut to `min` at once.
 *   4. Stabilization: the lowest recommendation over the scale-up window (HPA default 0 s: the
 *      newest only) and the highest over the scale-down window (300 s) bound the result: no
 *      scale-down before the window has seen only lower recommendations.
 *   5. The scale-up rate: at most max(pods, replicas x percent%) added per period, counting the
 *      replicas added within the period (HPA's default: max(4, 100%) per 15 s).
 *   6. Clamped to [min, max], and never below 1 while the service runs: scale to zero (min 0)
 *      is not a recommendation but its own rule (no request at all for the cool-down:
 *      autoscale.ts), and waking from zero is a held request's (cold-start.ts).
 */
import type { MeshAutoscale } from '../api/mesh/autoscale.js';

/** What held a decision back from its recommendation ("why not more", or why no change). */
export type AutoscaleLimit = 'min' | 'max' | 'stabilization' | 'rate-limit' | 'no-metric' | 'no-ready';

export interface AutoscaleState {
  /** Recommendations (clock ms, replicas) within the longer stabilization window, oldest first. */
  readonly recommendations: ReadonlyArray<{ readonly time: number; readonly replicas: number }>;
  /** Scale-ups (clock ms, replicas added) within the scale-up period, oldest first. */
  readonly scaleUps: ReadonlyArray<{ readonly time: number; readonly added: number }>;
}

export const EMPTY_AUTOSCALE_STATE: AutoscaleState = Object.freeze({ recommendations: Object.freeze([]), scaleUps: Object.freeze([]) });

/** The history of an autoscaler that starts (or is switched on) at `replicas`: a recommendation of them now, so the scale-down window holds from the start. */
export function seedAutoscaleState(now: number, replicas: number): AutoscaleState {
  return { recommendations: [{ time: now, replicas }], scaleUps: [] };
}

export interface AutoscaleInput {
  readonly now: number;
  readonly policy: MeshAutoscale;
  /** The replicas the service is asked to run now. */
  readonly replicas: number;
  /** Its ready replicas of the current revision. */
  readonly ready: number;
  /** The service's rps or in-flight requests (totals), or its p99 in ms; null: not known. */
  readonly metric: number | null;
}

export interface AutoscaleDecision {
  /** What to run: `replicas` when nothing changes. */
  readonly desired: number;
  /** The metric per ready replica (rps, inFlight) or as it is (p99); null without a metric or a ready replica. */
  readonly value: number | null;
  /** What the metric alone asks for (step 3), before stabilization, rate and bounds; null: nothing. */
  readonly recommendation: number | null;
  /** Why `desired` is not `recommendation` (null: it is, or within the tolerance). */
  readonly limitedBy: AutoscaleLimit | null;
  readonly state: AutoscaleState;
}

/** The fewest replicas a recommendation may give: min, and 1 with min 0 (zero is the cool-down's rule). */
const floorOf = (p: MeshAutoscale) => Math.max(1, p.min);
const clamp = (n: number, p: MeshAutoscale) => Math.min(p.max, Math.max(floorOf(p), n));
/** Float noise taken off: 220 / 200 is 1.1, inside a 10% tolerance; 500 / 100 x 1 is 5, not a hair over. */
const EPS = 1e-9;

/** Step 3: what the metric asks for, with the tolerance; the replicas when within it. */
export function recommend(p: MeshAutoscale, replicas: number, ready: number, metric: number): { value: number; replicas: number } {
  if (p.metric === 'p99') {
    const ratio = metric / p.target;
    if (ratio > 1 + p.tolerance + EPS) return { value: metric, replicas: Math.ceil(ready * ratio - EPS) };
    if (ratio < 1 - p.tolerance - EPS) return { value: metric, replicas: Math.min(replicas, ready) - 1 };
    return { value: metric, replicas };
  }
  const value = metric / ready;
  const ratio = value / p.target;
  if (Math.abs(ratio - 1) <= p.tolerance + EPS) return { value, replicas };
  return { value, replicas: Math.ceil(ready * ratio - EPS) };
}

/** One decision (steps 1-6 above) and the state for the next. */
export function decideReplicas(input: AutoscaleInput, state: AutoscaleState): AutoscaleDecision {
  const { now, policy: p, replicas, ready, metric } = input;
  const upCutoff = now - p.scaleUp.stabilizationMs;
  const downCutoff = now - p.scaleDown.stabilizationMs;
  const keepFrom = Math.min(upCutoff, downCutoff);
  let recommendations = state.recommendations.filter((r) => r.time > keepFrom);
  const scaleUps = state.scaleUps.filter((e) => e.time > now - p.scaleUp.periodMs);
  const next = (desired: number, more: Partial<AutoscaleDecision>): AutoscaleDecision => {
    const added = desired > replicas ? [{ time: now, added: desired - replicas }] : [];
    return { desired, value: null, recommendation: null, limitedBy: null, ...more, state: { recommendations, scaleUps: [...scaleUps, ...added] } };
  };

  if (replicas < p.min || replicas > p.max) return next(Math.min(p.max, Math.max(p.min, replicas)), { limitedBy: replicas < p.min ? 'min' : 'max' });
  if (metric === null) return next(replicas, { limitedBy: 'no-metric' });
  if (ready <= 0) return next(replicas, { limitedBy: 'no-ready' });

  const r = recommend(p, replicas, ready, metric);
  recommendations = [...recommendations, { time: now, replicas: r.replicas }];
  // Stabilization (HPA): the newest recommendation bounded by the lowest of the up window and the highest of the down window.
  let up = r.replicas;
  let down = r.replicas;
  for (const rec of recommendations) {
    if (rec.time > upCutoff) up = Math.min(up, rec.replicas);
    if (rec.time > downCutoff) down = Math.max(down, rec.replicas);
  }
  let desired = Math.min(Math.max(replicas, up), down);
  let limitedBy: AutoscaleLimit | null = desired !== r.replicas ? 'stabilization' : null;

  if (desired > replicas) {
    // The scale-up rate: replicas added within the period count against it.
    const addedInPeriod = scaleUps.reduce((a, e) => a + e.added, 0);
    const start = replicas - addedInPeriod;
    const limit = Math.max(replicas, start + p.scaleUp.pods, Math.ceil(start * (1 + p.scaleUp.percent / 100)));
    if (desired > limit) {
      desired = limit;
      limitedBy = 'rate-limit';
    }
  }
  if (desired > p.max) limitedBy = 'max';
  else if (desired < floorOf(p)) limitedBy = 'min';
  desired = clamp(desired, p);
  return next(desired, { value: r.value, recommendation: r.replicas, limitedBy: desired === r.replicas ? null : limitedBy });
}
