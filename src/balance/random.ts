/**
 * Weighted random: each pick is independent, with probability weight / total weight (Walker's
 * alias method: O(1) per pick, O(n) per update). Stateless across picks, so nothing to keep
 * across updates. Use it with many proxies and no need for load awareness, or as a baseline.
 *
 * Gate: up to 4 draws are tried; if none was available, one O(n) pass draws among the
 * available endpoints by weight (null when none is).
 */
import type { Endpoint } from '../discovery/endpoint.js';
import type { PickContext, Rng } from './balancer.js';
import { AliasTable } from './alias.js';
import { BaseBalancer, NO_CONTEXT, checkRng, weightedScan } from './common.js';

export interface RandomOptions {
  /** Default Math.random; tests pass a seeded generator (rng.ts). */
  rng?: Rng;
}

const GATED_DRAWS = 4;

export class RandomBalancer extends BaseBalancer {
  readonly kind = 'random' as const;
  private readonly rng: Rng;
  private alias = new AliasTable([]);

  constructor(opts: RandomOptions = {}) {
    super();
    this.rng = checkRng(this.kind, opts.rng);
  }

  protected rebuild(): void {
    this.alias = new AliasTable(this.eps.map((e) => e.weight));
  }

  pick(ctx: PickContext = NO_CONTEXT): Endpoint | null {
    const eps = this.eps;
    if (eps.length === 0) return null;
    const gate = ctx.available;
    if (gate === undefined) return eps[this.alias.sample(this.rng)]!;
    for (let t = 0; t < GATED_DRAWS; t++) {
      const e = eps[this.alias.sample(this.rng)]!;
      if (gate(e)) return e;
    }
    return weightedScan(eps, gate, this.rng);
  }
}
