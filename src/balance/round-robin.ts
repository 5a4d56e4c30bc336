/**
 * Round robin: endpoints in turn, ordered by key; weights other than 0 are ignored (use
 * weighted-round-robin for weights). O(1) per pick.
 *
 * - Start: a random position (so proxies started together do not all begin with one endpoint).
 * - Across updates: continues with the first endpoint after the one picked last (by key order),
 *   so frequent updates neither restart the cycle nor favour the first endpoints.
 * - Gate: unavailable endpoints are skipped; the turn passes to the next available one.
 */
import type { Endpoint } from '../discovery/endpoint.js';
import type { PickContext, Rng } from './balancer.js';
import { BaseBalancer, NO_CONTEXT, checkRng, randomIndex } from './common.js';

export interface RoundRobinOptions {
  /** Chooses the first position; default Math.random. */
  rng?: Rng;
}

export class RoundRobinBalancer extends BaseBalancer {
  readonly kind = 'round-robin' as const;
  private readonly rng: Rng;
  /** Index in `eps` of the next endpoint to try. */
  private next = 0;

  constructor(opts: RoundRobinOptions = {}) {
    super();
    this.rng = checkRng(this.kind, opts.rng);
  }

  protected rebuild(prev: readonly Endpoint[]): void {
    const eps = this.eps;
    const n = eps.length;
    if (n === 0) {
      this.next = 0;
      return;
    }
    if (prev.length === 0) {
      this.next = randomIndex(this.rng, n);
      return;
    }
    // The first key after the last one picked (or before the one due next, if none was picked).
    const last = prev[(this.next + prev.length - 1) % prev.length]!.key;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (eps[mid]!.key <= last) lo = mid + 1;
      else hi = mid;
    }
    this.next = lo === n ? 0 : lo;
  }

  pick(ctx: PickContext = NO_CONTEXT): Endpoint | null {
    const eps = this.eps;
    const n = eps.length;
    if (n === 0) return null;
    let i = this.next;
    const gate = ctx.available;
    if (gate === undefined) {
      this.next = i + 1 === n ? 0 : i + 1;
      return eps[i]!;
    }
    for (let tries = 0; tries < n; tries++) {
      const e = eps[i]!;
      i = i + 1 === n ? 0 : i + 1;
      if (gate(e)) {
        this.next = i;
        return e;
      }
    }
    return null;
  }
}
