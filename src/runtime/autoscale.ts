/**
 * The autoscaler of one service in `skein up`: every `interval` (on the injected Clock) it reads
 * the service's signals (AutoscaleSignals: the control plane's golden signals, in-process), asks
 * the HPA algorithm (autoscale-algorithm.ts) for the replicas, and scales the ServiceRuntime.
 *
 * Frozen while a rollout (rolling update or canary) moves the service: replicas are the
 * rollout's then (HPA scaling during rollouts is kubernetes #72775, #90461).
 *
 * Every change is a mesh event of type `autoscale` (`change: "autoscale"`) with its inputs; a
 * decision held back (frozen, stabilization, rate limit, max, no metric) is one too
 * (`change: "autoscale-held"`), at most once per reason per quiet window
 * (max(scaleDown.stabilization, scaleUp.period)), so a steady hold does not flood the feed.
 *
 * Scale to zero (min 0; docs/deployments.md#scale-to-zero): when the service had no request at
 * all over `coolDown` (the control plane's signals: every caller's requests, as its inbound
 * listeners saw them), none is in flight through the runtime's proxy, and `coolDown` has passed
 * since it started or last woke, its replicas go to zero. A missing reading never does it. While
 * at zero the autoscaler waits: callers' proxies hold the service's requests (cold-start.ts) and
 * ask for it to be woken (`wake`), which starts one replica at once; the HPA takes over from there.
 */
import type { Clock, TimerHandle } from '../core/clock.js';
import { formatDuration } from '../core/duration.js';
import { AUTOSCALE_DEFAULTS, formatTarget, type AutoscaleMetric, type MeshAutoscale } from '../api/mesh/autoscale.js';
import { decideReplicas, seedAutoscaleState, type AutoscaleLimit, type AutoscaleState } from './autoscale-algorithm.js';

/** A metric's value now: the number, or null and why it is missing. */
export type MetricReading = { readonly value: number } | { readonly value: null; readonly why: string };

/** Where the autoscaler reads a service's metric: rps and inFlight as the service's totals, p99 in ms, over the last `windowMs`. */
export interface AutoscaleSignals {
  read(service: string, metric: AutoscaleMetric, windowMs: number): Promise<MetricReading>;
}

/** What the autoscaler drives: one service's runtime (ServiceRuntime). */
export interface AutoscaleHost {
  readonly service: string;
  /** Its policy now (it follows `skein apply`); undefined: not autoscaled. */
  autoscale(): MeshAutoscale | undefined;
  /** The replicas asked for now. */
  desired(): number;
  /** Ready replicas of the current revision. */
  currentReady(): number;
  /** A rollout or canary is moving the service. */
  rolloutActive(): boolean;
  scale(n: number): Promise<void>;
}

export type AutoscaleReason = AutoscaleLimit | 'frozen';

/** The last decision, for GET /v1/mesh and `skein stat SERVICE`. */
export interface AutoscaleDecisionView {
  readonly time: string;
  readonly metric: AutoscaleMetric;
  /** Per ready replica (rps, inFlight) or the service's p99 in ms; null when missing. */
  readonly value: number | null;
  readonly target: number;
  /** Replicas before the decision, and the ready ones of the current revision. */
  readonly current: number;
  readonly ready: number;
  readonly recommendation: number | null;
  readonly desired: number;
  /** What held it back (null: nothing). */
  readonly limitedBy: AutoscaleReason | null;
  readonly message: string;
}

export interface AutoscaleView {
  readonly min: number;
  readonly max: number;
  readonly metric: AutoscaleMetric;
  readonly target: number;
  readonly frozen: boolean;
  readonly last: AutoscaleDecisionView | null;
}

export interface AutoscalerOptions {
  readonly host: AutoscaleHost;
  readonly signals: AutoscaleSignals;
  readonly clock: Clock;
  /** A mesh event about the service (`change` autoscale or autoscale-held). */
  event(message: string, fields: Record<string, unknown>): void;
}

const WHY: Readonly<Record<AutoscaleReason, string>> = Object.freeze({
  min: 'held at min',
  max: 'held at max',
  stabilization: 'held by the scale-down stabilization window',
  'rate-limit': 'held by the scale-up rate limit',
  'no-metric': 'no metric',
  'no-ready': 'no ready replica of the current revision',
  frozen: 'frozen: a rollout is in progress',
});

/** Reasons that never make a held-back event: at min is what a quiet service is; no ready replica is a start or a crash (scale events say so). */
const SILENT: ReadonlySet<AutoscaleReason> = new Set(['min', 'no-ready']);

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

export class Autoscaler {
  private timer: TimerHandle | null = null;
  private intervalMs = 0;
  /** null until the service is autoscaled (then seeded with its replicas). */
  private state: AutoscaleState | null = null;
  private last: AutoscaleDecisionView | null = null;
  private readonly heldAt = new Map<AutoscaleReason, number>();
  private busy = false;
  private stopped = false;
  /** Clock ms the service last started or woke: no scale to zero within coolDown of it. */
  private awakeSince: number;

  constructor(private readonly o: AutoscalerOptions) {
    this.awakeSince = o.clock.now();
  }

  /** Starts ticking at the policy's interval (nothing happens while the service is not autoscaled). */
  start(): void {
    this.stopped = false;
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
  }

  /** Re-arms the timer when the interval changed (an apply). */
  private arm(): void {
    const p = this.o.host.autoscale();
    const ms = p?.intervalMs ?? AUTOSCALE_DEFAULTS.intervalMs;
    if (this.timer !== null && ms === this.intervalMs) return;
    this.timer?.cancel();
    this.intervalMs = ms;
    this.timer = this.o.clock.setInterval(() => void this.tick(), ms);
  }

  view(): AutoscaleView | null {
    const p = this.o.host.autoscale();
    if (p === undefined) return null;
    return { min: p.min, max: p.max, metric: p.metric, target: p.target, frozen: this.o.host.rolloutActive(), last: this.last };
  }

  /** One decision (the timer's; tests call it). Overlapping ticks are skipped. */
  async tick(): Promise<void> {
    if (this.busy || this.stopped) return;
    this.busy = true;
    try {
      await this.decide();
    } finally {
      this.busy = false;
    }
    if (!this.stopped) this.arm();
  }

  private async decide(): Promise<void> {
    const { host, clock } = this.o;
    const p = host.autoscale();
    if (p === undefined) {
      this.state = null;
      this.last = null;
      return;
    }
    // No scale-down within the first stabilization window after the start (or an apply that turned autoscaling on).
    this.state ??= seedAutoscaleState(clock.now(), host.desired());
    if (host.rolloutActive()) {
      this.record(p, { value: null, recommendation: null, desired: host.desired(), limitedBy: 'frozen' }, undefined);
      return;
    }
    if (p.min === 0) {
      // Asleep: a held request wakes it (wake), not a metric.
      if (host.desired() === 0) return;
      if (clock.now() - this.awakeSince >= p.coolDownMs && (await this.idle(p))) {
        if (this.stopped || host.rolloutActive() || host.desired() === 0) return;
        this.toZero(p);
        return;
      }
      if (this.stopped || host.rolloutActive()) return;
    }
    const reading = await this.o.signals.read(host.service, p.metric, p.windowMs);
    if (this.stopped) return;
    // The rollout may have started while the signals were read.
    if (host.rolloutActive()) return;
    const replicas = host.desired();
    const ready = host.currentReady();
    const d = decideReplicas({ now: clock.now(), policy: p, replicas, ready, metric: reading.value }, this.state ?? seedAutoscaleState(clock.now(), replicas));
    this.state = d.state;
    const detail = reading.value === null ? reading.why : undefined;
    this.record(p, { value: d.value, recommendation: d.recommendation, desired: d.desired, limitedBy: d.limitedBy }, detail);
    if (d.desired !== replicas) host.scale(d.desired).catch(() => undefined);
  }

  /** No request over the cool-down (a reading, not a missing one), and none in flight through the runtime's proxy. */
  private async idle(p: MeshAutoscale): Promise<boolean> {
    const [rps, inFlight] = await Promise.all([
      this.o.signals.read(this.o.host.service, 'rps', p.coolDownMs),
      this.o.signals.read(this.o.host.service, 'inFlight', p.coolDownMs),
    ]);
    // No in-flight state: the runtime's proxy never called the service (other callers count in rps).
    return rps.value === 0 && (inFlight.value ?? 0) === 0;
  }

  private toZero(p: MeshAutoscale): void {
    const { host, clock } = this.o;
    const current = host.desired();
    const message = `${host.service} scaled to zero from ${current} replicas: no request for ${formatDuration(p.coolDownMs)} (autoscale.coolDown); the next request wakes it`;
    this.last = { time: new Date(clock.now()).toISOString(), metric: p.metric, value: 0, target: p.target, current, ready: host.currentReady(), recommendation: 0, desired: 0, limitedBy: null, message };
    this.heldAt.clear();
    this.o.event(message, { change: 'autoscale', metric: p.metric, value: 0, target: p.target, current, ready: host.currentReady(), recommendation: 0, desired: 0, limitedBy: null, reason: 'idle', coolDownMs: p.coolDownMs });
    host.scale(0).catch(() => undefined);
  }

  /**
   * A caller's proxy holds requests for the service: from zero to one replica at once (no
   * stabilization or rate limit applies to the first). False when there is nothing to wake: not
   * scaled to zero, or a rollout moves it.
   */
  wake(): boolean {
    const { host, clock } = this.o;
    const p = host.autoscale();
    if (this.stopped || p === undefined || p.min !== 0 || host.desired() !== 0 || host.rolloutActive()) return false;
    const now = clock.now();
    this.awakeSince = now;
    // The scale-down window starts again from here: the first replica is not cut while requests arrive.
    this.state = seedAutoscaleState(now, 1);
    const message = `${host.service} woken from zero to 1 replica: a caller's proxy holds requests for it`;
    this.last = { time: new Date(now).toISOString(), metric: p.metric, value: null, target: p.target, current: 0, ready: 0, recommendation: 1, desired: 1, limitedBy: null, message };
    this.heldAt.clear();
    this.o.event(message, { change: 'autoscale', metric: p.metric, value: null, target: p.target, current: 0, ready: 0, recommendation: 1, desired: 1, limitedBy: null, reason: 'wake' });
    host.scale(1).catch(() => undefined);
    return true;
  }

  private record(
    p: MeshAutoscale,
    d: { value: number | null; recommendation: number | null; desired: number; limitedBy: AutoscaleReason | null },
    detail: string | undefined,
  ): void {
    const { host, clock } = this.o;
    const now = clock.now();
    const current = host.desired();
    const ready = host.currentReady();
    const value = d.value === null ? null : round(d.value);
    const measured = value === null ? `${p.metric} ${d.limitedBy === 'frozen' ? 'not read' : 'unknown'}` : p.metric === 'p99' ? `p99 ${formatDuration(value)}` : `${p.metric} ${value} per replica`;
    const inputs = `${measured}, target ${formatTarget(p)}, ${ready} ready`;
    const why = d.limitedBy === null ? '' : `; ${WHY[d.limitedBy]}${detail === undefined ? '' : ` (${detail})`}`;
    const changed = d.desired !== current;
    const message = changed
      ? `${host.service} autoscaled from ${current} to ${d.desired} replicas: ${inputs}${why}`
      : d.limitedBy !== null
        ? `${host.service} stays at ${current} replicas${d.recommendation === null ? '' : ` (wants ${d.recommendation})`}: ${inputs}${why}`
        : `${host.service} stays at ${current} replicas: ${inputs}`;
    this.last = { time: new Date(now).toISOString(), metric: p.metric, value, target: p.target, current, ready, recommendation: d.recommendation, desired: d.desired, limitedBy: d.limitedBy, message };
    const fields = { metric: p.metric, value, target: p.target, current, ready, recommendation: d.recommendation, desired: d.desired, limitedBy: d.limitedBy, ...(detail === undefined ? {} : { detail }) };
    if (changed) {
      // A change starts the quiet windows again: what holds it next is news.
      this.heldAt.clear();
      this.o.event(message, { change: 'autoscale', ...fields });
      return;
    }
    if (d.limitedBy === null || SILENT.has(d.limitedBy)) return;
    // No change wanted by the metric itself (p99 at min, say) is not a hold.
    if (d.limitedBy !== 'frozen' && d.limitedBy !== 'no-metric' && d.recommendation === current) return;
    const quiet = Math.max(p.scaleDown.stabilizationMs, p.scaleUp.periodMs);
    const at = this.heldAt.get(d.limitedBy);
    if (at !== undefined && now - at < quiet) return;
    this.heldAt.set(d.limitedBy, now);
    this.o.event(message, { change: 'autoscale-held', reason: d.limitedBy, ...fields });
  }
}
