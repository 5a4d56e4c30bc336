/**
 * A service's autoscaling policy in the mesh file (`autoscale:`), its defaults and bounds,
 * written once: Kubernetes' HorizontalPodAutoscaler (autoscaling/v2) with its default behavior
 * (10% tolerance; scale up by at most max(4 replicas, 100%) per 15 s; scale-down stabilization of
 * 300 s), on the mesh's own golden signals. The algorithm is src/runtime/autoscale-algorithm.ts;
 * docs/deployments.md#autoscaling documents both.
 */
import { Type } from '@sinclair/typebox';
import { formatDuration } from '../../core/duration.js';
import { Duration } from '../fields.js';
import { durationAt } from '../duration.js';
import type { Push } from '../validate.js';

/** What a target measures: requests per second per replica, requests in flight per replica, or the service's p99 latency. */
export const AUTOSCALE_METRICS = ['rps', 'inFlight', 'p99'] as const;
export type AutoscaleMetric = (typeof AUTOSCALE_METRICS)[number];

export interface MeshAutoscale {
  readonly min: number;
  readonly max: number;
  readonly metric: AutoscaleMetric;
  /** Per replica for rps and inFlight; milliseconds for p99. */
  readonly target: number;
  /** A change is made only when the metric is off its target by more than this fraction (HPA's 0.1). */
  readonly tolerance: number;
  /** Time between two decisions. */
  readonly intervalMs: number;
  /** The signals a decision reads: the last `windowMs` of the service's traffic. */
  readonly windowMs: number;
  readonly scaleUp: {
    /** At most this many replicas added per `periodMs`, or `percent` of the replicas, whichever is more. */
    readonly pods: number;
    readonly percent: number;
    readonly periodMs: number;
    /** The lowest recommendation over this window is taken (HPA's scaleUp stabilizationWindowSeconds: 0). */
    readonly stabilizationMs: number;
  };
  readonly scaleDown: {
    /** The highest recommendation over this window is taken: no scale-down before it passed. */
    readonly stabilizationMs: number;
  };
  /** With min 0: no request at all for this long (and none since the service last woke), and it goes to zero replicas. */
  readonly coolDownMs: number;
}

/** Every default (min, the tolerance, the HPA's behavior) and the bounds, once. */
export const AUTOSCALE_DEFAULTS = Object.freeze({
  min: 1,
  tolerance: 0.1,
  intervalMs: 5_000,
  windowMs: 15_000,
  scaleUp: Object.freeze({ pods: 4, percent: 100, periodMs: 15_000, stabilizationMs: 0 }),
  scaleDown: Object.freeze({ stabilizationMs: 300_000 }),
  /** Scale to zero (min 0) after this long without a request (Knative scales to zero after ~60-90 s; the signals keep 5 minutes). */
  coolDownMs: 300_000,
});

/** min and max run from 1 to the mesh file's replicas bound (MAX_REPLICAS, schema.ts, which passes it in). */
export const AUTOSCALE_BOUNDS = Object.freeze({
  /** rps and inFlight per replica. */
  perReplica: Object.freeze({ max: 1_000_000 }),
  p99Ms: Object.freeze({ min: 1, max: 600_000 }),
  tolerancePercent: Object.freeze({ max: 50 }),
  intervalMs: Object.freeze({ min: 100, max: 600_000 }),
  /** The signals keep 5 minutes per scrape interval (a window under the scrape interval reads one interval). */
  windowMs: Object.freeze({ min: 1_000, max: 300_000 }),
  periodMs: Object.freeze({ min: 100, max: 3_600_000 }),
  stabilizationMs: Object.freeze({ max: 3_600_000 }),
  /** Read over the signals' 5 minutes, like windowMs. */
  coolDownMs: Object.freeze({ min: 1_000, max: 300_000 }),
});

const B = AUTOSCALE_BOUNDS;
const D = AUTOSCALE_DEFAULTS;

/** The schema of `autoscale:`, replicas bounded by `maxReplicas` (schema.ts's MAX_REPLICAS). */
export function autoscaleSchema(maxReplicas: number) {
  const Replicas = (description: string, from = 1) => Type.Integer({ description: `${description} ${from}..${maxReplicas}.` });
  return Type.Object(
  {
    min: Type.Optional(Replicas(`Fewest replicas; 0 scales the service to zero after coolDown without a request (callers' proxies hold requests while one starts). Default ${D.min};`, 0)),
    max: Replicas('Most replicas (required);'),
    target: Type.Object(
      {
        rps: Type.Optional(Type.Number({ description: `Requests per second per ready replica (0 < rps <= ${B.perReplica.max}).` })),
        inFlight: Type.Optional(Type.Number({ description: `Requests in flight per ready replica (0 < inFlight <= ${B.perReplica.max}).` })),
        p99: Type.Optional(Duration(`The service's p99 latency (${formatDuration(B.p99Ms.min)}..${formatDuration(B.p99Ms.max)}).`)),
      },
      { additionalProperties: false, description: 'Exactly one of rps, inFlight, p99.' },
    ),
    tolerance: Type.Optional(Type.Number({ description: `Percent the metric may be off its target without a change. Default ${D.tolerance * 100}; 0..${B.tolerancePercent.max}.` })),
    interval: Type.Optional(Duration(`Time between decisions. Default ${formatDuration(D.intervalMs)}; ${formatDuration(B.intervalMs.min)}..${formatDuration(B.intervalMs.max)}.`)),
    window: Type.Optional(Duration(`Traffic a decision reads (whole scrape intervals). Default ${formatDuration(D.windowMs)}; ${formatDuration(B.windowMs.min)}..${formatDuration(B.windowMs.max)}.`)),
    scaleUp: Type.Optional(
      Type.Object(
        {
          pods: Type.Optional(Type.Integer({ description: `Replicas a period may add. Default ${D.scaleUp.pods}; 1..${maxReplicas}.` })),
          percent: Type.Optional(Type.Integer({ description: `Percent of the replicas a period may add. Default ${D.scaleUp.percent}; 1..1000.` })),
          period: Type.Optional(Duration(`The period of pods and percent (the larger applies). Default ${formatDuration(D.scaleUp.periodMs)}.`)),
          stabilization: Type.Optional(Duration(`The lowest recommendation over this window is taken. Default ${formatDuration(D.scaleUp.stabilizationMs)}; at most 1h.`)),
        },
        { additionalProperties: false, description: 'How fast replicas are added (HPA behavior.scaleUp).' },
      ),
    ),
    coolDown: Type.Optional(
      Duration(`With min 0: time without a request before the last replica stops. Default ${formatDuration(D.coolDownMs)}; ${formatDuration(B.coolDownMs.min)}..${formatDuration(B.coolDownMs.max)}.`),
    ),
    scaleDown: Type.Optional(
      Type.Object(
        { stabilization: Type.Optional(Duration(`The highest recommendation over this window is taken. Default ${formatDuration(D.scaleDown.stabilizationMs)}; at most 1h.`)) },
        { additionalProperties: false, description: 'How slowly replicas are removed (HPA behavior.scaleDown).' },
      ),
    ),
  },
  { additionalProperties: false, description: 'Replicas follow the golden signals between min and max (docs/deployments.md#autoscaling).' },
  );
}

export interface RawAutoscale {
  min?: number;
  max: number;
  target: { rps?: number; inFlight?: number; p99?: string };
  tolerance?: number;
  interval?: string;
  window?: string;
  scaleUp?: { pods?: number; percent?: number; period?: string; stabilization?: string };
  scaleDown?: { stabilization?: string };
  coolDown?: string;
}

function intAt(raw: number | undefined, dflt: number, field: string, lo: number, hi: number, push: Push): number {
  if (raw === undefined) return dflt;
  if (!Number.isInteger(raw) || raw < lo || raw > hi) push(field, `must be a whole number from ${lo} to ${hi}, not ${raw}`);
  return raw;
}

function targetOf(t: RawAutoscale['target'], push: Push): { metric: AutoscaleMetric; target: number } {
  const given = AUTOSCALE_METRICS.filter((m) => t[m] !== undefined);
  if (given.length !== 1) {
    push('autoscale.target', given.length === 0 ? `must name one metric: ${AUTOSCALE_METRICS.join(', ')}` : `names ${given.join(' and ')}; it takes exactly one of ${AUTOSCALE_METRICS.join(', ')}`);
    return { metric: 'rps', target: 1 };
  }
  const metric = given[0] as AutoscaleMetric;
  if (metric === 'p99') {
    const ms = durationAt(t.p99, 0, 'autoscale.target.p99', push, B.p99Ms);
    return { metric, target: ms };
  }
  const v = t[metric] as number;
  if (!(v > 0) || v > B.perReplica.max) push(`autoscale.target.${metric}`, `must be more than 0 and at most ${B.perReplica.max}, not ${v}`);
  return { metric, target: v };
}

/** The raw `autoscale:` of a service -> MeshAutoscale with every default (null when absent); problems pushed at `autoscale.<field>`; min within 0..maxReplicas, max within 1..maxReplicas. */
export function buildAutoscale(raw: RawAutoscale | undefined, push: Push, maxReplicas: number): MeshAutoscale | null {
  if (raw === undefined) return null;
  const R = { min: 1, max: maxReplicas };
  const min = intAt(raw.min, D.min, 'autoscale.min', 0, R.max, push);
  if (raw.coolDown !== undefined && min !== 0) push('autoscale.coolDown', `applies to scale to zero only (autoscale.min 0), and min is ${min}`);
  const max = intAt(raw.max, R.max, 'autoscale.max', R.min, R.max, push);
  if (min > max && min <= R.max) push('autoscale.min', `must be at most autoscale.max (${max}), not ${min}`);
  const { metric, target } = targetOf(raw.target, push);
  const tol = raw.tolerance ?? D.tolerance * 100;
  if (!(tol >= 0 && tol <= B.tolerancePercent.max)) push('autoscale.tolerance', `must be a percent from 0 to ${B.tolerancePercent.max}, not ${tol}`);
  const up = raw.scaleUp ?? {};
  const stab = (text: string | undefined, dflt: number, field: string) => durationAt(text, dflt, field, push, { min: 0, max: B.stabilizationMs.max });
  return Object.freeze({
    min,
    max,
    metric,
    target,
    tolerance: tol / 100,
    intervalMs: durationAt(raw.interval, D.intervalMs, 'autoscale.interval', push, B.intervalMs),
    windowMs: durationAt(raw.window, D.windowMs, 'autoscale.window', push, B.windowMs),
    scaleUp: Object.freeze({
      pods: intAt(up.pods, D.scaleUp.pods, 'autoscale.scaleUp.pods', 1, R.max, push),
      percent: intAt(up.percent, D.scaleUp.percent, 'autoscale.scaleUp.percent', 1, 1000, push),
      periodMs: durationAt(up.period, D.scaleUp.periodMs, 'autoscale.scaleUp.period', push, B.periodMs),
      stabilizationMs: stab(up.stabilization, D.scaleUp.stabilizationMs, 'autoscale.scaleUp.stabilization'),
    }),
    scaleDown: Object.freeze({ stabilizationMs: stab(raw.scaleDown?.stabilization, D.scaleDown.stabilizationMs, 'autoscale.scaleDown.stabilization') }),
    coolDownMs: durationAt(raw.coolDown, D.coolDownMs, 'autoscale.coolDown', push, B.coolDownMs),
  });
}

/** "rps 100 per replica", "inFlight 8 per replica", "p99 250ms": a target as people read it. */
export function formatTarget(a: Pick<MeshAutoscale, 'metric' | 'target'>): string {
  return a.metric === 'p99' ? `p99 ${formatDuration(a.target)}` : `${a.metric} ${a.target} per replica`;
}
