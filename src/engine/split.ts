/**
 * Traffic splitting: a route's `backends` share its requests between subsets of the service's
 * instances by weight (90/10 between versions, a canary's steps), each subset balanced on its
 * own. The canary controller (issue 14 §2) drives the weights; users may set them by hand.
 *
 * - A `Subset` follows the service's endpoint set: its own `EndpointSet` lineage (only the
 *   instances in the subset) and its own balancer of the service's kind, updated in O(changes)
 *   per watch-stream change. Routes that name the same subset share it.
 * - A `Split` chooses a backend per request by smooth weighted round robin (nginx's): over any
 *   100 requests of a 90/10 split exactly 90 and 10, whatever the concurrency; a random draw
 *   would miss ±2 points over 10,000 requests about one run in twenty.
 * - `Splitter.pick` picks an endpoint within the chosen backend with the traffic state's gate
 *   (breakers, ejections, active checks, tried endpoints) and the service-wide panic decision.
 *   When the chosen backend has no endpoint that may take the request, the other backends take
 *   it by their weights (a weight-0 backend too, when nothing else is left); only when none has
 *   one does the request fail, with the usual no-endpoint error.
 * - A retry stays within the request's backend while it has an endpoint not yet tried; when it
 *   has none left, the retry goes to another backend (by weight), and only when every backend
 *   is out of untried endpoints is a tried one taken again, within the request's backend first.
 *   A retry is for reaching another instance: a one-replica canary retried within itself would
 *   retry the instance that just failed.
 *
 * Nothing here does I/O, and a pick allocates nothing unless it falls back (its choice object is
 * then made once per pair of backends).
 */
import type { BackendPolicy, RoutePolicy } from '../api/traffic.js';
import { inSubset } from '../api/traffic.js';
import type { Balancer, BalancerKind, Completion, PickContext } from '../balance/balancer.js';
import { nginxStep } from '../balance/weighted-round-robin.js';
import { EndpointSet, type Endpoint } from '../discovery/endpoint.js';
import type { TrafficState } from '../resilience/traffic-state.js';

/** The backend a request went to, as the call keeps it for its retries and explanation. */
export interface BackendChoice {
  readonly backend: BackendPolicy;
  /** The backend chosen by weight first, when it had no endpoint to take the request; null: none. */
  readonly instead: BackendPolicy | null;
}

/**
 * One subset of the service's instances: its endpoints (an EndpointSet lineage of its own, so its
 * balancer follows changes in O(changes)) and its balancer.
 */
export class Subset {
  private source = EndpointSet.empty();
  set = EndpointSet.empty();
  /** What TrafficState.pick is given: picks in the subset, the panic decision on the whole service. */
  readonly view: Balancer;

  constructor(
    readonly name: string,
    readonly subset: BackendPolicy['subset'],
    readonly balancer: Balancer,
    whole: () => Balancer,
  ) {
    const inner = balancer;
    this.view = {
      get kind(): BalancerKind {
        return inner.kind;
      },
      get set() {
        return whole().set;
      },
      get size() {
        return whole().size;
      },
      update: () => {
        throw new Error('a subset follows its service (Subset.follow)');
      },
      pick: (ctx?: PickContext) => inner.pick(ctx),
      start: (e: Endpoint) => inner.start(e),
    };
  }

  /** Endpoints of the subset that may be picked (weight > 0). */
  get size(): number {
    return this.set.pickable;
  }

  has(e: Endpoint): boolean {
    return this.set.get(e.key) !== undefined;
  }

  /** The service's endpoint set changed: the subset follows, in O(changes) when `next` is one step from the last. */
  follow(next: EndpointSet): void {
    const prev = this.source;
    if (next === prev) return;
    this.source = next;
    const changes = next.changesSince(prev);
    if (changes === null) {
      this.step({ type: 'reset', endpoints: next.list().filter((e) => inSubset(this.subset, e)) });
      return;
    }
    const gone: string[] = [];
    const added: Endpoint[] = [];
    for (const e of changes.removed) gone.push(e.key);
    for (const e of changes.upserted) {
      if (inSubset(this.subset, e)) added.push(e);
      else gone.push(e.key);
    }
    if (gone.length > 0) this.step({ type: 'remove', keys: gone });
    if (added.length > 0) this.step({ type: 'add', endpoints: added });
  }

  /** One change at a time: the balancer follows each in O(changes). */
  private step(u: Parameters<EndpointSet['apply']>[0]): void {
    const s = this.set.apply(u);
    if (s === this.set) return;
    this.set = s;
    this.balancer.update(s);
  }
}

/**
 * Smooth weighted round robin over a split's backends (nginx's), with a mask of backends left
 * out (bit i: backend i has no endpoint for this request). Backends of weight 0 take part only
 * when every backend left has weight 0 (then in turn).
 */
export class WeightedChoice {
  private readonly current: Float64Array;
  /** Every weight 1: the turn weight-0 backends take when no weighted one is left. */
  private readonly ones: Float64Array;
  /** The mask of the pick under way (read by `masked`, made once). */
  private mask = 0;
  private readonly masked = (i: number) => (this.mask & (1 << i)) !== 0;

  constructor(readonly weights: readonly number[]) {
    this.current = new Float64Array(weights.length);
    this.ones = new Float64Array(weights.length).fill(1);
  }

  /** The next backend's index, none of `mask`; -1 when every backend is masked. */
  next(mask = 0): number {
    this.mask = mask;
    const w = this.weights;
    let weighted = false;
    for (let i = 0; i < w.length; i++) if ((mask & (1 << i)) === 0 && (w[i] as number) > 0) weighted = true;
    return nginxStep(weighted ? w : this.ones, this.current, this.masked);
  }
}

/** A route's split: its backends, their subsets and the weighted choice between them. */
export class Split {
  readonly choice: WeightedChoice;
  /** The choice of each backend when it takes the request it was chosen for. */
  private readonly direct: readonly BackendChoice[];
  /** Choices of a backend taking another's request, made on first use: [instead * n + backend]. */
  private readonly fallbacks: Array<BackendChoice | undefined>;
  /**
   * The weighted choice between the others when backend i has no endpoint, one per i (made on
   * first use): a cycle of its own, so that the requests of an empty backend are shared by the
   * others' weights exactly, and the main cycle is not thrown off by them.
   */
  private readonly others: Array<WeightedChoice | undefined>;

  constructor(
    readonly backends: readonly BackendPolicy[],
    readonly subsets: readonly Subset[],
  ) {
    this.choice = new WeightedChoice(backends.map((b) => b.weight));
    this.direct = backends.map((backend) => Object.freeze({ backend, instead: null }));
    this.fallbacks = new Array<BackendChoice | undefined>(backends.length * backends.length);
    this.others = new Array<WeightedChoice | undefined>(backends.length);
  }

  /** The next backend instead of backend `first`, none of `mask` (which holds `first`); -1: none left. */
  instead(first: number, mask: number): number {
    return (this.others[first] ??= new WeightedChoice(this.choice.weights)).next(mask);
  }

  /** Backend `i` took the request, instead of backend `first` (the same: it was chosen). */
  chosen(i: number, first: number): BackendChoice {
    if (i === first || first < 0) return this.direct[i] as BackendChoice;
    const k = first * this.backends.length + i;
    return (this.fallbacks[k] ??= Object.freeze({ backend: this.backends[i] as BackendPolicy, instead: this.backends[first] as BackendPolicy }));
  }

  /** The index of the backend with this subset name; -1: none (the split changed since). */
  indexOf(name: string): number {
    for (let i = 0; i < this.backends.length; i++) if ((this.backends[i] as BackendPolicy).name === name) return i;
    return -1;
  }
}

const sameBackends = (a: readonly BackendPolicy[], b: readonly BackendPolicy[]) => JSON.stringify(a) === JSON.stringify(b);

function wasTried(e: Endpoint, tried: readonly Endpoint[]): boolean {
  for (let i = 0; i < tried.length; i++) if ((tried[i] as Endpoint).key === e.key) return true;
  return false;
}

/** What /debug/endpoints shows of a split: each backend's share and how many instances it has. */
export interface SplitDebug {
  readonly route: string;
  readonly backends: ReadonlyArray<{ readonly subset: Record<string, string>; readonly weight: number; readonly endpoints: number; readonly unknown: boolean }>;
}

/**
 * The splits of one service's routes and the subsets they name, kept up to date with the
 * service's policy (`setRoutes`) and endpoints (`update`). A route whose backends did not change
 * keeps its place in the weighted cycle; a changed one starts a new cycle with its new weights
 * (requests in flight are not touched: they hold their endpoint and connection).
 */
export class Splitter {
  private readonly subsets = new Map<string, Subset>();
  private splits = new Map<string, Split>();
  private set = EndpointSet.empty();
  private routes: readonly RoutePolicy[] = [];
  /** The backend of the last `pick` (null: the route splits nothing, or nothing was found). */
  chosen: BackendChoice | null = null;
  /** The split of the last pick that found nothing (for the error), or null. */
  lastEmpty: Split | null = null;

  constructor(
    private readonly makeBalancer: () => Balancer,
    private readonly whole: () => Balancer,
  ) {}

  /** True when some route splits. */
  get active(): boolean {
    return this.splits.size > 0;
  }

  /** The service's routes changed (a PUT of the service or of a route). */
  setRoutes(routes: readonly RoutePolicy[]): void {
    this.routes = routes;
    const next = new Map<string, Split>();
    const used = new Set<string>();
    for (const r of routes) {
      if (r.backends.length === 0) continue;
      const old = this.splits.get(r.name);
      const split = old !== undefined && sameBackends(old.backends, r.backends) ? old : new Split(r.backends, r.backends.map((b) => this.subset(b)));
      for (const b of r.backends) used.add(b.name);
      next.set(r.name, split);
    }
    for (const name of [...this.subsets.keys()]) if (!used.has(name)) this.subsets.delete(name);
    this.splits = next;
  }

  /** The balancer kind changed: each subset gets a new balancer of the new kind. */
  rebalance(): void {
    this.subsets.clear();
    this.splits = new Map();
    this.setRoutes(this.routes);
  }

  private subset(b: BackendPolicy): Subset {
    let s = this.subsets.get(b.name);
    if (s === undefined) {
      s = new Subset(b.name, b.subset, this.makeBalancer(), this.whole);
      s.follow(this.set);
      this.subsets.set(b.name, s);
    }
    return s;
  }

  /** The service's endpoints changed. */
  update(set: EndpointSet): void {
    this.set = set;
    for (const s of this.subsets.values()) s.follow(set);
  }

  /** The split of a route; null: the route splits nothing (or went away since the request matched it). */
  splitOf(route: RoutePolicy): Split | null {
    return route.backends.length === 0 ? null : (this.splits.get(route.name) ?? null);
  }

  /**
   * An endpoint of `split` for a request: `prior` is the backend of the request's earlier
   * attempts (null for the first). Sets `chosen`. See the top of this file for the rules.
   */
  pick(split: Split, traffic: TrafficState, hash: string | Buffer | undefined, tried: readonly Endpoint[] | null, prior: BackendChoice | null): Endpoint | null {
    this.lastEmpty = null;
    const p = prior === null || tried === null ? -1 : split.indexOf(prior.backend.name);
    if (p < 0) {
      // A first attempt (or a retry whose backend left the split): by weight.
      const first = split.choice.next();
      let mask = 0;
      for (let i = first; i >= 0; i = split.instead(first, mask)) {
        const e = traffic.pick((split.subsets[i] as Subset).view, hash, tried);
        if (e !== null) {
          this.chosen = split.chosen(i, first);
          return e;
        }
        mask |= 1 << i;
      }
      return this.none(split);
    }
    // A retry: an untried endpoint of its backend, else of another backend, else a tried one.
    const t = tried as readonly Endpoint[];
    const own = traffic.pick((split.subsets[p] as Subset).view, hash, t);
    if (own !== null && !wasTried(own, t)) {
      this.chosen = split.chosen(p, p);
      return own;
    }
    let spare: Endpoint | null = null;
    let spareAt = -1;
    let mask = 1 << p;
    for (let i = split.instead(p, mask); i >= 0; i = split.instead(p, mask)) {
      const e = traffic.pick((split.subsets[i] as Subset).view, hash, t);
      if (e !== null && !wasTried(e, t)) {
        this.chosen = split.chosen(i, p);
        return e;
      }
      if (e !== null && spare === null) {
        spare = e;
        spareAt = i;
      }
      mask |= 1 << i;
    }
    if (own !== null) {
      this.chosen = split.chosen(p, p);
      return own;
    }
    if (spare !== null) {
      this.chosen = split.chosen(spareAt, p);
      return spare;
    }
    return this.none(split);
  }

  /**
   * An endpoint of the subset `b` outside any split (a mirror's): the subset is made on first use
   * and follows the endpoints like a split's; a policy change that names it in no route drops it,
   * and the next pick makes it again.
   */
  pickIn(b: BackendPolicy, traffic: TrafficState, hash: string | Buffer | undefined): Endpoint | null {
    return traffic.pick(this.subset(b).view, hash, null);
  }

  private none(split: Split): null {
    this.chosen = null;
    this.lastEmpty = split;
    return null;
  }

  /**
   * The load-aware balancers of the subsets holding `e` count a request to it too (each subset's
   * balancer sees the endpoint's whole load, whatever route sent it).
   */
  starts(e: Endpoint, whole: Completion): Completion {
    let out = whole;
    for (const s of this.subsets.values()) {
      if (!s.has(e)) continue;
      const c = s.balancer.start(e);
      const prev = out;
      out = {
        end(o) {
          prev.end(o);
          c.end(o);
        },
      };
    }
    return out;
  }

  /** Each split's backends with their instances: a subset no instance is in shows `unknown: true`. */
  debug(): SplitDebug[] {
    return [...this.splits].map(([route, s]) => ({
      route,
      backends: s.backends.map((b, i) => {
        const n = (s.subsets[i] as Subset).set.size;
        return { subset: Object.fromEntries(b.subset), weight: b.weight, endpoints: n, unknown: n === 0 };
      }),
    }));
  }
}

/** "version=v2 (weight 10)", and the backend it stood in for, if any: for x-skein-explain. */
export function choiceText(c: BackendChoice): string {
  const s = `${c.backend.name} (weight ${c.backend.weight})`;
  return c.instead === null ? s : `${s}, instead of ${c.instead.name} (weight ${c.instead.weight}), which had no endpoint left for the request`;
}

/** The backend in an error body's details. */
export function choiceDetails(c: BackendChoice): Record<string, unknown> {
  const one = (b: BackendPolicy) => ({ subset: Object.fromEntries(b.subset), weight: b.weight });
  return c.instead === null ? one(c.backend) : { ...one(c.backend), instead: one(c.instead) };
}
