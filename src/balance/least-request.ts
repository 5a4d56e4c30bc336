/**
 * Least request, by the power of two choices: draw two distinct endpoints at random with
 * probability proportional to weight, and send to the one with fewer requests in flight per unit
 * of weight (in-flight / weight); on a tie, the first drawn. With no load every endpoint gets its
 * weight's share; under load, busy endpoints are avoided. O(1) per pick with equal weights,
 * O(log n) otherwise (weighted draws from a Fenwick tree); O(1) / O(log n) per changed endpoint.
 *
 * Feedback: `start(e)` counts a request in flight on `e`; `end()` of the returned completion
 * counts it out (latency and outcome are not used). In-flight counts are kept across updates for
 * endpoints that stay (also while drained at weight 0); an endpoint whose address or port changed
 * starts at 0.
 *
 * Gate: draws that hit unavailable endpoints are redrawn (up to 6 draws in all); if fewer than
 * two available ones were found the one found is taken, and if none, one O(n) pass takes the
 * least loaded available endpoint (ties drawn by weight).
 */
import type { Endpoint, EndpointChanges } from '../discovery/endpoint.js';
import { NOOP_COMPLETION, type Completion, type Gate, type Outcome, type PickContext, type Rng, optionsSchema, type BalancerRegistration } from './balancer.js';
import { BaseBalancer, NO_CONTEXT, checkRng } from './common.js';
import { Slots } from './slots.js';
import { WeightedIndex } from './weighted-index.js';

export interface LeastRequestOptions {
  /** Default Math.random; tests pass a seeded generator (rng.ts). */
  rng?: Rng;
}

class Load {
  inflight = 0;
  /** The endpoint as in the current set (its weight may change across updates). */
  constructor(public endpoint: Endpoint) {}
}

class LoadCompletion implements Completion {
  private done = false;
  constructor(private readonly load: Load) {}
  end(_outcome: Outcome): void {
    if (this.done) return;
    this.done = true;
    this.load.inflight--;
  }
}

const MAX_GATED_DRAWS = 6;

export class LeastRequestBalancer extends BaseBalancer {
  readonly kind = 'least-request' as const;
  private readonly rng: Rng;
  /** The load of every endpoint (weight 0 included); `states[i]` is that of `eps[i]`. */
  private readonly slots = new Slots<Load>((e) => new Load(e), new WeightedIndex());

  constructor(opts: LeastRequestOptions = {}) {
    super();
    this.rng = checkRng(this.kind, opts.rng);
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
    const load = this.slots.byKey.get(e.key);
    if (load === undefined) return NOOP_COMPLETION;
    load.inflight++;
    return new LoadCompletion(load);
  }

  pick(ctx: PickContext = NO_CONTEXT): Endpoint | null {
    const eps = this.slots.eps;
    const n = eps.length;
    if (n === 0) return null;
    const gate = ctx.available;
    if (n === 1) return gate === undefined || gate(eps[0]!) ? eps[0]! : null;
    if (gate !== undefined) return this.pickGated(gate);
    const weights = this.slots.weights!;
    const a = weights.sample(this.rng);
    let b = weights.sample(this.rng);
    if (b === a) b = weights.sample(this.rng);
    if (b === a) b = (a + 1 + ((this.rng() * (n - 1)) | 0)) % n;
    return eps[this.better(a, b)]!;
  }

  /** a unless b has fewer in flight per unit of weight (compared without dividing). */
  private better(a: number, b: number): number {
    const la = this.slots.states[a]!;
    const lb = this.slots.states[b]!;
    return lb.inflight * la.endpoint.weight < la.inflight * lb.endpoint.weight ? b : a;
  }

  private pickGated(gate: Gate): Endpoint | null {
    const eps = this.slots.eps;
    const weights = this.slots.weights!;
    let a = -1;
    let b = -1;
    for (let d = 0; d < MAX_GATED_DRAWS && b < 0; d++) {
      const i = weights.sample(this.rng);
      if (i === a || !gate(eps[i]!)) continue;
      if (a < 0) a = i;
      else b = i;
    }
    if (b >= 0) return eps[this.better(a, b)]!;
    if (a >= 0) return eps[a]!;
    // Slow path: the least loaded available endpoint, ties drawn by weight.
    let best: Load | null = null;
    let tieWeight = 0;
    for (const l of this.slots.states) {
      if (!gate(l.endpoint)) continue;
      const w = l.endpoint.weight;
      if (best === null || l.inflight * best.endpoint.weight < best.inflight * w) {
        best = l;
        tieWeight = w;
      } else if (l.inflight * best.endpoint.weight === best.inflight * w) {
        tieWeight += w;
        if (this.rng() * tieWeight < w) best = l;
      }
    }
    return best === null ? null : best.endpoint;
  }
}

/** The least-request balancer, as createBalancer (index.ts) finds it. */
export const leastRequestBalancer: BalancerRegistration<'least-request', Omit<LeastRequestOptions, 'clock' | 'rng'>> = {
  kind: 'least-request',
  schema: optionsSchema('least-request'),
  factory: (_options, deps) => new LeastRequestBalancer({ rng: deps.rng }),
};
