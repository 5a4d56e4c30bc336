/**
 * Smooth weighted round robin, the algorithm of nginx's upstream module: on every pick each
 * endpoint's current weight grows by its weight, the endpoint with the largest current weight
 * wins (the first in key order on ties), and the winner's current weight drops by the total.
 * Over one cycle of W picks (W = total weight, after dividing all weights by their greatest
 * common divisor) every endpoint is picked exactly its weight's worth of times, and its picks are
 * spread out (weights 5,1,1 give a a b a c a a, not a a a a a b c).
 *
 * Speed: the nginx step is O(n). So on update, when the cycle is small enough (W <= maxSchedule
 * and W * n <= maxBuildSteps), the whole cycle is computed once (O(W * n)) and a pick is an O(1)
 * read of the next entry. Otherwise (huge or coprime weights over many endpoints) each pick runs
 * the nginx step live. Both give exactly nginx's sequence.
 *
 * Rebuilds on updates are coalesced for large sets (table.ts).
 *
 * Across updates:
 * - cycle mode keeps its place: the position moves to the same fraction of the new cycle, so
 *   frequent updates neither restart the cycle (which would favour its first entries) nor lose
 *   the spread;
 * - live mode keeps each staying endpoint's current weight (new ones start at 0), shifted so they
 *   sum to 0 and clamped to [-W, W], which bounds how far the first picks after an update can
 *   stray from the new weights;
 * - the very first position is random (so proxies started together do not all begin alike).
 *
 * Gate: unavailable endpoints are skipped. In cycle mode the next available entry of the cycle is
 * taken (the gate is asked at most once per endpoint per pick); in live mode unavailable
 * endpoints sit the round out and the total is that of the available ones, as nginx does with
 * failed peers.
 */
import { systemClock, type Clock } from '../core/clock.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { Type } from '@sinclair/typebox';
import { type PickContext, type Rng, optionsSchema, type BalancerRegistration } from './balancer.js';
import { GateMemo, checkNumber, checkRng, gcd, randomIndex, sameTarget } from './common.js';
import { TableBalancer } from './table.js';

export interface WeightedRoundRobinOptions {
  /** Paces table rebuilds (table.ts); default the system clock. */
  clock?: Clock;
  /** Chooses the first position; default Math.random. */
  rng?: Rng;
  /** Longest cycle (total weight after GCD reduction) that is precomputed; default 65536. */
  maxSchedule?: number;
  /** Most work (cycle length x endpoints) spent precomputing on an update; default 4194304. */
  maxBuildSteps?: number;
}

export class WeightedRoundRobinBalancer extends TableBalancer {
  readonly kind = 'weighted-round-robin' as const;
  private readonly rng: Rng;
  private readonly maxSchedule: number;
  private readonly maxBuildSteps: number;
  private readonly memo = new GateMemo();
  /** Cycle mode: the precomputed cycle (indexes into `eps`) and the next position in it. */
  private schedule: Int32Array | null = null;
  private pos = 0;
  /** Live mode: weights (GCD-reduced), current weights, and their total. */
  private weights = new Float64Array(0);
  private current = new Float64Array(0);
  private total = 0;

  constructor(opts: WeightedRoundRobinOptions = {}) {
    super(opts.clock ?? systemClock);
    this.rng = checkRng(this.kind, opts.rng);
    this.maxSchedule = checkNumber(this.kind, 'maxSchedule', opts.maxSchedule, 65536, 0, 1 << 24, true);
    this.maxBuildSteps = checkNumber(this.kind, 'maxBuildSteps', opts.maxBuildSteps, 1 << 22, 0, 2 ** 40, true);
  }

  /** True when picks read a precomputed cycle (for tests and the admin page). */
  get precomputed(): boolean {
    return this.schedule !== null;
  }

  protected buildTable(prev: readonly Endpoint[]): void {
    const eps = this.eps;
    const n = eps.length;
    this.memo.resize(n);
    let g = 0;
    for (const e of eps) g = gcd(e.weight, g);
    const weights = new Float64Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) total += weights[i] = eps[i]!.weight / g;
    const oldSchedule = this.schedule;
    const oldCurrent = this.current;
    this.weights = weights;
    this.total = total;
    if (n > 0 && total <= this.maxSchedule && total * n <= this.maxBuildSteps) {
      const schedule = nginxCycle(weights, total);
      if (oldSchedule !== null && oldSchedule.length > 0) this.pos = Math.floor((this.pos * total) / oldSchedule.length) % total;
      else this.pos = randomIndex(this.rng, total);
      this.schedule = schedule;
      this.current = new Float64Array(0);
      return;
    }
    this.schedule = null;
    const current = new Float64Array(n);
    if (oldSchedule === null && prev.length > 0 && n > 0) {
      // Both lists are in key order: walk them side by side.
      let sum = 0;
      let j = 0;
      for (let i = 0; i < n; i++) {
        const key = eps[i]!.key;
        while (j < prev.length && prev[j]!.key < key) j++;
        if (j < prev.length && prev[j]!.key === key && sameTarget(prev[j]!, eps[i]!)) current[i] = oldCurrent[j] ?? 0;
        sum += current[i]!;
      }
      const mean = sum / n;
      for (let i = 0; i < n; i++) current[i] = Math.max(-total, Math.min(total, current[i]! - mean));
    } else if (n > 0) {
      // A random place in the cycle: run the nginx step a random number of times (bounded).
      const skip = randomIndex(this.rng, Math.min(total, 4096));
      this.current = current;
      for (let s = 0; s < skip; s++) this.liveStep(undefined);
    }
    this.current = current;
  }

  protected pickTable(ctx: PickContext): Endpoint | null {
    const eps = this.eps;
    if (eps.length === 0) return null;
    const gate = ctx.available;
    const schedule = this.schedule;
    if (schedule === null) {
      const i = this.liveStep(gate);
      return i < 0 ? null : eps[i]!;
    }
    const len = schedule.length;
    let p = this.pos;
    if (gate === undefined) {
      this.pos = p + 1 === len ? 0 : p + 1;
      return eps[schedule[p]!]!;
    }
    const memo = this.memo;
    memo.begin();
    for (let s = 0; s < len; s++) {
      const i = schedule[p]!;
      p = p + 1 === len ? 0 : p + 1;
      if (memo.marked(i)) continue;
      const e = eps[i]!;
      if (gate(e)) {
        this.pos = p;
        return e;
      }
      memo.mark(i);
      if (memo.count === eps.length) return null;
    }
    return null;
  }

  /** One nginx step over the endpoints the gate lets through; -1 when none does. */
  private liveStep(gate: PickContext['available']): number {
    const eps = this.eps;
    return nginxStep(this.weights, this.current, gate === undefined ? undefined : (i) => !gate(eps[i]!));
  }
}

/**
 * One step of nginx's smooth weighted round robin: every index that takes part (weight > 0, not
 * skipped) grows its current weight by its weight, the largest current weight wins (the first on
 * ties) and drops by the total weight of those that took part. Returns the winner; -1 when none
 * took part. The balancer above and the traffic split between a route's backends
 * (engine/split.ts) both step with it.
 */
export function nginxStep(weights: ArrayLike<number>, cur: Float64Array, skip?: (i: number) => boolean): number {
  let best = -1;
  let bestC = -Infinity;
  let total = 0;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i]!;
    if (w === 0 || (skip !== undefined && skip(i))) continue;
    const c = (cur[i] = cur[i]! + w);
    total += w;
    if (c > bestC) {
      bestC = c;
      best = i;
    }
  }
  if (best >= 0) cur[best] = bestC - total;
  return best;
}

/** One full nginx cycle from all-zero current weights (it ends where it began). */
export function nginxCycle(weights: Float64Array, total: number): Int32Array {
  const cur = new Float64Array(weights.length);
  const out = new Int32Array(total);
  for (let t = 0; t < total; t++) out[t] = nginxStep(weights, cur);
  return out;
}

/** The weighted-round-robin balancer, as createBalancer (index.ts) finds it. */
export const weightedRoundRobinBalancer: BalancerRegistration<'weighted-round-robin', Omit<WeightedRoundRobinOptions, 'clock' | 'rng'>> = {
  kind: 'weighted-round-robin',
  schema: optionsSchema('weighted-round-robin', { maxSchedule: Type.Optional(Type.Integer({ description: 'Longest cycle precomputed; default 65536.' })), maxBuildSteps: Type.Optional(Type.Integer({ description: 'Most work spent precomputing on an update; default 4194304.' })) }),
  factory: (options, deps) => new WeightedRoundRobinBalancer({ ...options, ...deps }),
};
