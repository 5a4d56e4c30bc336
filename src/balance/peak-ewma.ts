/**
 * Peak-EWMA with the power of two choices, after Linkerd (and Finagle before it): each endpoint
 * has a latency estimate; a pick draws two distinct endpoints uniformly at random and sends to
 * the cheaper, where
 *
 *     cost = estimate x (in-flight + 1) / weight
 *
 * The estimate is peak-sensitive: a response slower than the estimate replaces it at once; a
 * faster one is blended in with weight 1 - exp(-dt / tau), dt being the time since the previous
 * response (or since the endpoint went idle), so the estimate falls back over about tau (default
 * 10 s) whatever the request rate. While an endpoint has nothing in flight its estimate also
 * decays toward zero with the same time constant: an endpoint that was avoided for being slow is
 * eventually tried again, and its next response sets the estimate afresh. While requests are in
 * flight the estimate does not decay (an endpoint that stopped answering does not become cheap).
 *
 * - A new endpoint (or one whose address or port changed) starts at `defaultRttMs` (default 30 ms,
 *   Linkerd's default): slower than that, it is tried eagerly until its first responses arrive;
 *   faster, it ramps up as the default decays or as the others get busy.
 * - Failures (ok: false) never lower the estimate: their latency counts only when it is above the
 *   estimate (a fast error must not make a broken endpoint attractive; ejecting it is the outlier
 *   detector's job, through the gate).
 * - Weights divide the cost, so a weight-2 endpoint looks half as expensive. Candidates are drawn
 *   uniformly; with equal load and latency the heavier endpoint of a pair wins, so weights shift
 *   traffic strongly rather than proportionally (use least-request or random for proportional).
 * - Ties go to the first endpoint drawn. O(1) per pick: two random numbers, at most one clock read.
 * - An update costs O(1) per endpoint it changed (slots.ts): the estimates and in-flight counts of
 *   the others are not touched.
 * - Gate: as least-request (redraws, then an O(n) pass for the cheapest available endpoint).
 * - All time comes from the injected Clock.
 */
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import type { Endpoint, EndpointChanges } from '../discovery/endpoint.js';
import { Type } from '@sinclair/typebox';
import { NOOP_COMPLETION, type Completion, type Gate, type Outcome, type PickContext, type Rng, optionsSchema, type BalancerRegistration } from './balancer.js';
import { BaseBalancer, NO_CONTEXT, checkNumber, checkRng, optionError } from './common.js';
import { Slots } from './slots.js';

export interface PeakEwmaOptions {
  clock?: Clock;
  /** Default Math.random; tests pass a seeded generator (rng.ts). */
  rng?: Rng;
  /** Time constant tau of the decay, in ms; default 10000. */
  decayMs?: number;
  /** The estimate of an endpoint without responses yet, in ms; default 30. */
  defaultRttMs?: number;
}

export const PEAK_EWMA_DEFAULTS = Object.freeze({ decayMs: 10_000, defaultRttMs: 30 });

class EwmaState {
  inflight = 0;
  constructor(
    public endpoint: Endpoint,
    /** The latency estimate in ms, as of `at`. */
    public estimate: number,
    /** When the estimate was last set (a response, or going busy after being idle). */
    public at: number,
  ) {}
}

class EwmaCompletion implements Completion {
  private done = false;
  constructor(
    private readonly owner: PeakEwmaBalancer,
    private readonly state: EwmaState,
  ) {}
  end(outcome: Outcome): void {
    if (this.done) return;
    this.done = true;
    this.owner.record(this.state, outcome);
  }
}

const MAX_GATED_DRAWS = 6;

export class PeakEwmaBalancer extends BaseBalancer {
  readonly kind = 'peak-ewma' as const;
  private readonly clock: Clock;
  private readonly rng: Rng;
  private readonly decayMs: number;
  private readonly defaultRttMs: number;
  /** The state of every endpoint (weight 0 included); `states[i]` is that of `eps[i]`. */
  private readonly slots = new Slots<EwmaState>((e) => new EwmaState(e, this.defaultRttMs, this.clock.now()));

  constructor(opts: PeakEwmaOptions = {}) {
    super();
    this.clock = opts.clock ?? systemClock;
    if (typeof this.clock.now !== 'function') throw optionError(this.kind, 'clock', 'must be a Clock');
    this.rng = checkRng(this.kind, opts.rng);
    this.decayMs = checkNumber(this.kind, 'decayMs', opts.decayMs, PEAK_EWMA_DEFAULTS.decayMs, 1, 86_400_000);
    this.defaultRttMs = checkNumber(this.kind, 'defaultRttMs', opts.defaultRttMs, PEAK_EWMA_DEFAULTS.defaultRttMs, 0, 3_600_000);
  }

  /** The endpoint's latency estimate now, in ms (decayed if idle); undefined when unknown. */
  estimateMs(key: string): number | undefined {
    const s = this.slots.byKey.get(key);
    return s === undefined ? undefined : this.estimateAt(s, this.clock.now());
  }

  /** Requests in flight on the endpoint with this key (0 when unknown). */
  inflight(key: string): number {
    return this.slots.byKey.get(key)?.inflight ?? 0;
  }

  protected rebuild(): void {
    this.slots.rebuild(this.set.list());
  }

  protected follow(changes: EndpointChanges): void {
    this.slots.follow(changes);
  }

  override start(e: Endpoint): Completion {
    const s = this.slots.byKey.get(e.key);
    if (s === undefined) return NOOP_COMPLETION;
    if (s.inflight === 0) {
      // Going busy: the idle decay so far becomes the estimate.
      const now = this.clock.now();
      s.estimate = this.estimateAt(s, now);
      s.at = now;
    }
    s.inflight++;
    return new EwmaCompletion(this, s);
  }

  /** @internal Called once per completion. */
  record(s: EwmaState, outcome: Outcome): void {
    if (s.inflight > 0) s.inflight--;
    let sample = outcome.latencyMs;
    if (typeof sample !== 'number' || !(sample >= 0) || sample === Infinity) return;
    if (!outcome.ok && sample < s.estimate) sample = s.estimate;
    const now = this.clock.now();
    if (sample >= s.estimate) s.estimate = sample;
    else {
      const w = Math.exp(-Math.max(0, now - s.at) / this.decayMs);
      s.estimate = s.estimate * w + sample * (1 - w);
    }
    s.at = now;
  }

  pick(ctx: PickContext = NO_CONTEXT): Endpoint | null {
    const eps = this.slots.eps;
    const n = eps.length;
    if (n === 0) return null;
    const gate = ctx.available;
    if (n === 1) return gate === undefined || gate(eps[0]!) ? eps[0]! : null;
    if (gate !== undefined) return this.pickGated(gate);
    const a = (this.rng() * n) | 0;
    let b = (this.rng() * (n - 1)) | 0;
    if (b >= a) b++;
    return this.cheaper(a < n ? a : n - 1, b < n ? b : n - 1);
  }

  private estimateAt(s: EwmaState, now: number): number {
    if (s.inflight > 0 || now <= s.at) return s.estimate;
    return s.estimate * Math.exp((s.at - now) / this.decayMs);
  }

  private cost(s: EwmaState, now: number): number {
    return (this.estimateAt(s, now) * (s.inflight + 1)) / s.endpoint.weight;
  }

  /**
   * The cheaper of two endpoints (a on ties). Weights are cross-multiplied, and when both are idle
   * only the difference of their decay times matters: no clock read, one exp.
   */
  private cheaper(a: number, b: number): Endpoint {
    const sa = this.slots.states[a]!;
    const sb = this.slots.states[b]!;
    const ka = sa.estimate * (sa.inflight + 1) * sb.endpoint.weight;
    let kb = sb.estimate * (sb.inflight + 1) * sa.endpoint.weight;
    if (sa.inflight > 0 && sb.inflight > 0) return kb < ka ? sb.endpoint : sa.endpoint;
    if (sa.inflight === 0 && sb.inflight === 0) {
      // cost(b) / cost(a) = kb / ka x exp((at(b) - at(a)) / tau): both decayed since their `at`.
      const d = sb.at - sa.at;
      if (d !== 0 && kb !== 0) kb *= Math.exp(d / this.decayMs);
      return kb < ka ? sb.endpoint : sa.endpoint;
    }
    const now = this.clock.now();
    return this.cost(sb, now) < this.cost(sa, now) ? sb.endpoint : sa.endpoint;
  }

  private pickGated(gate: Gate): Endpoint | null {
    const eps = this.slots.eps;
    const n = eps.length;
    let a = -1;
    let b = -1;
    for (let d = 0; d < MAX_GATED_DRAWS && b < 0; d++) {
      let i = (this.rng() * n) | 0;
      if (i >= n) i = n - 1;
      if (i === a || !gate(eps[i]!)) continue;
      if (a < 0) a = i;
      else b = i;
    }
    if (b >= 0) return this.cheaper(a, b);
    if (a >= 0) return eps[a]!;
    const now = this.clock.now();
    let best: EwmaState | null = null;
    let bestCost = Infinity;
    for (const s of this.slots.states) {
      if (!gate(s.endpoint)) continue;
      const c = this.cost(s, now);
      if (best === null || c < bestCost) {
        best = s;
        bestCost = c;
      }
    }
    return best === null ? null : best.endpoint;
  }
}

/** The peak-ewma balancer, as createBalancer (index.ts) finds it. */
export const peakEwmaBalancer: BalancerRegistration<'peak-ewma', Omit<PeakEwmaOptions, 'clock' | 'rng'>> = {
  kind: 'peak-ewma',
  schema: optionsSchema('peak-ewma', { decayMs: Type.Optional(Type.Number({ description: `Decay time constant, ms; default ${PEAK_EWMA_DEFAULTS.decayMs}.` })), defaultRttMs: Type.Optional(Type.Number({ description: `Estimate of an endpoint without responses yet, ms; default ${PEAK_EWMA_DEFAULTS.defaultRttMs}.` })) }),
  factory: (options, deps) => new PeakEwmaBalancer({ ...options, ...deps }),
};
