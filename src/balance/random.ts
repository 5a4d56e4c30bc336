/**
 * Weighted random: each pick is independent, with probability weight / total weight (a Fenwick
 * tree of the weights: O(log n) per pick, O(1) when all weights are equal; O(log n) per changed
 * endpoint). Stateless across picks, so nothing to keep across updates. Use it with many proxies
 * and no need for load awareness, or as a baseline.
 *
 * Gate: up to 4 draws are tried; if none was available, one O(n) pass draws among the
 * available endpoints by weight (null when none is).
 */
import type { Endpoint, EndpointChanges } from '../discovery/endpoint.js';
import { type PickContext, type Rng, optionsSchema, type BalancerRegistration } from './balancer.js';
import { BaseBalancer, NO_CONTEXT, checkRng, weightedScan } from './common.js';
import { Slots, type SlotState } from './slots.js';
import { WeightedIndex } from './weighted-index.js';

export interface RandomOptions {
  /** Default Math.random; tests pass a seeded generator (rng.ts). */
  rng?: Rng;
}

const GATED_DRAWS = 4;

export class RandomBalancer extends BaseBalancer {
  readonly kind = 'random' as const;
  private readonly rng: Rng;
  private readonly slots = new Slots<SlotState>((endpoint) => ({ endpoint }), new WeightedIndex());

  constructor(opts: RandomOptions = {}) {
    super();
    this.rng = checkRng(this.kind, opts.rng);
  }

  protected rebuild(): void {
    this.slots.rebuild(this.set.list());
  }

  protected follow(changes: EndpointChanges): void {
    this.slots.follow(changes);
  }

  pick(ctx: PickContext = NO_CONTEXT): Endpoint | null {
    const eps = this.slots.eps;
    if (eps.length === 0) return null;
    const weights = this.slots.weights!;
    const gate = ctx.available;
    if (gate === undefined) return eps[weights.sample(this.rng)]!;
    for (let t = 0; t < GATED_DRAWS; t++) {
      const e = eps[weights.sample(this.rng)]!;
      if (gate(e)) return e;
    }
    return weightedScan(eps, gate, this.rng);
  }
}

/** The random balancer, as createBalancer (index.ts) finds it. */
export const randomBalancer: BalancerRegistration<'random', Omit<RandomOptions, 'clock' | 'rng'>> = {
  kind: 'random',
  schema: optionsSchema('random'),
  factory: (_options, deps) => new RandomBalancer({ rng: deps.rng }),
};
