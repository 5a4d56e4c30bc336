/**
 * Ring hash (consistent hashing, after Karger et al. 1997, laid out like libketama): every
 * endpoint owns points on a 32-bit ring, and a request goes to the owner of the first point at or
 * after its key's hash (wrapping around). The same key reaches the same endpoint on every proxy;
 * when an endpoint leaves, only the keys it owned move (to the next points' owners), and when one
 * joins it takes only keys from others' arcs.
 *
 * Points: endpoint e gets round(weight(e) x s) points (at least 1); the j-th is at
 * mix32(murmur3(key, seed1), murmur3(key, seed2) + j), a function of the key and j alone. The scale s per unit of weight is a power of two chosen so that the ring
 * holds at least max(minRingSize, 128 x endpoints) points (at most twice that, and never more
 * than maxRingSize). Because s is a power of two it rarely changes, so an endpoint leaving or
 * joining leaves every other endpoint's points exactly where they were: no key moves between
 * endpoints that stayed. Points are sorted (a radix sort; ties by key order) into a Uint32Array
 * with a parallel array of endpoint indexes, rebuilt on updates only (coalesced for large sets:
 * table.ts; meanwhile the points of endpoints that left are walked past, which is exactly where
 * the rebuilt ring sends their keys); when the scale is unchanged
 * the new ring is the old one without the points of endpoints that left, merged with the points
 * of those that joined (O(points), no full sort). A pick is a binary search, O(log points),
 * narrowed first by a bucket index (the first point in each of about points/4 equal ranges of the
 * ring), so it usually takes two or three steps.
 *
 * - No hash key in the context: a uniformly random point of the ring, i.e. a weighted random pick.
 * - Gate: from the key's point, walk clockwise to the first point whose endpoint is available (the
 *   gate is asked at most once per endpoint); the keys of an unavailable endpoint thus spread over
 *   the others as if it had left. Null when no endpoint is available.
 * - Weight 0: no points.
 */
import { systemClock, type Clock } from '../core/clock.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { Type } from '@sinclair/typebox';
import { type PickContext, type Rng, optionsSchema, type BalancerRegistration } from './balancer.js';
import { GateMemo, checkNumber, checkRng, optionError } from './common.js';
import { TableBalancer } from './table.js';
import { hashKey, hashString, mix32 } from './hash.js';

export interface RingHashOptions {
  /** Paces table rebuilds (table.ts); default the system clock. */
  clock?: Clock;
  /** For requests without a hash key; default Math.random. */
  rng?: Rng;
  /** Fewest points on the ring; default 4096. */
  minRingSize?: number;
  /** Most points on the ring; default 1048576 (8 bytes each). */
  maxRingSize?: number;
}

export const RING_HASH_DEFAULTS = Object.freeze({ minRingSize: 4096, maxRingSize: 1 << 20, pointsPerEndpoint: 128 });

const POINT_SEED_1 = 0x3c6ef372;
const POINT_SEED_2 = 0xa54ff53a;

/** How many points an endpoint of this weight gets at this scale. */
function pointCount(weight: number, scale: number): number {
  return Math.max(1, Math.round(weight * scale));
}

/** The points of these endpoints, unsorted, each owned by `owner(e, position in list)`. */
function pointsOf(eps: readonly Endpoint[], owner: (e: Endpoint, i: number) => number, scale: number, size: number): [Uint32Array, Int32Array] {
  const points = new Uint32Array(size);
  const owners = new Int32Array(size);
  let k = 0;
  for (let i = 0; i < eps.length; i++) {
    const e = eps[i]!;
    const c = pointCount(e.weight, scale);
    const o = owner(e, i);
    const h1 = hashString(e.key, POINT_SEED_1);
    const h2 = hashString(e.key, POINT_SEED_2);
    for (let j = 0; j < c; j++) {
      points[k] = mix32(h1, (h2 + j) | 0);
      owners[k++] = o;
    }
  }
  return [points, owners];
}

/** Sorts positions (with their owners alongside) by a stable LSD radix sort, 11 bits a pass. */
export function radixSort(keys: Uint32Array, values: Int32Array): [Uint32Array, Int32Array] {
  const n = keys.length;
  let k1 = keys;
  let v1 = values;
  let k2: Uint32Array = new Uint32Array(n);
  let v2: Int32Array = new Int32Array(n);
  const counts = new Int32Array(2048);
  for (let shift = 0; shift < 32; shift += 11) {
    counts.fill(0);
    for (let i = 0; i < n; i++) counts[(k1[i]! >>> shift) & 2047]!++;
    let sum = 0;
    for (let d = 0; d < 2048; d++) {
      const c = counts[d]!;
      counts[d] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const key = k1[i]!;
      const at = counts[(key >>> shift) & 2047]!++;
      k2[at] = key;
      v2[at] = v1[i]!;
    }
    [k1, k2] = [k2, k1];
    [v1, v2] = [v2, v1];
  }
  return [k1, v1];
}

export class RingHashBalancer extends TableBalancer {
  readonly kind = 'ring-hash' as const;
  private readonly rng: Rng;
  private readonly minRingSize: number;
  private readonly maxRingSize: number;
  private readonly memo = new GateMemo();
  private points: Uint32Array = new Uint32Array(0);
  private owners: Int32Array = new Int32Array(0);
  /** buckets[b] = index of the first point whose top bits are >= b (see rebuild). */
  private buckets: Int32Array = new Int32Array(3);
  private shift = 31;
  /** Points per unit of weight of the current ring (0 when empty). */
  private scale = 0;

  constructor(opts: RingHashOptions = {}) {
    super(opts.clock ?? systemClock);
    this.rng = checkRng(this.kind, opts.rng);
    this.maxRingSize = checkNumber(this.kind, 'maxRingSize', opts.maxRingSize, RING_HASH_DEFAULTS.maxRingSize, 1, 1 << 26, true);
    this.minRingSize = checkNumber(this.kind, 'minRingSize', opts.minRingSize, RING_HASH_DEFAULTS.minRingSize, 1, 1 << 26, true);
    if (this.minRingSize > this.maxRingSize) throw optionError(this.kind, 'minRingSize', `must not exceed maxRingSize (${this.maxRingSize})`);
  }

  /** How many points the ring has. */
  get ringSize(): number {
    return this.points.length;
  }

  protected buildTable(prev: readonly Endpoint[]): void {
    const eps = this.eps;
    const n = eps.length;
    this.memo.resize(n);
    if (n === 0) {
      this.points = new Uint32Array(0);
      this.owners = new Int32Array(0);
      this.buckets = new Int32Array(3);
      this.shift = 31;
      this.scale = 0;
      return;
    }
    let total = 0;
    for (const e of eps) total += e.weight;
    const target = Math.min(this.maxRingSize, Math.max(this.minRingSize, RING_HASH_DEFAULTS.pointsPerEndpoint * n));
    let scale = 2 ** Math.ceil(Math.log2(target / total));
    let size: number;
    for (;;) {
      size = 0;
      for (const e of eps) size += pointCount(e.weight, scale);
      if (size <= this.maxRingSize || scale <= 2 ** -40) break;
      scale /= 2;
    }
    if (scale === this.scale && prev.length > 0 && this.points.length > 0) this.merge(prev, scale, size);
    else {
      // Points in endpoint order, then a stable radix sort by position: ties keep key order.
      const [points, owners] = pointsOf(eps, (_, i) => i, scale, size);
      [this.points, this.owners] = radixSort(points, owners);
    }
    this.scale = scale;
    this.index();
  }

  /**
   * The ring for the new endpoints when the scale did not change: the old ring without the points
   * of endpoints that left (or changed weight), merged with the sorted points of those that
   * joined (or changed weight). O(points) instead of a full sort; the same ring as a full build
   * (ties by key order, since endpoints that stay keep their relative order).
   */
  private merge(prev: readonly Endpoint[], scale: number, size: number): void {
    const eps = this.eps;
    const n = eps.length;
    const remap = new Int32Array(prev.length);
    const carried = new Uint8Array(n);
    let addSize = size;
    // Both lists are in key order: walk them side by side (a Map of 50,000 keys cost more than
    // the merge of the points itself).
    let j = 0;
    for (let i = 0; i < prev.length; i++) {
      const key = prev[i]!.key;
      while (j < n && eps[j]!.key < key) j++;
      const c = pointCount(prev[i]!.weight, scale);
      if (j < n && eps[j]!.key === key && pointCount(eps[j]!.weight, scale) === c) {
        remap[i] = j;
        carried[j] = 1;
        addSize -= c;
      } else remap[i] = -1;
    }
    const fresh: number[] = [];
    for (let i = 0; i < n; i++) if (carried[i] === 0) fresh.push(i);
    const [k0, v0] = pointsOf(
      fresh.map((i) => eps[i]!),
      (_, f) => fresh[f]!,
      scale,
      addSize,
    );
    const [addK, addV] = radixSort(k0, v0);
    const oldPoints = this.points;
    const oldOwners = this.owners;
    const points = new Uint32Array(size);
    const owners = new Int32Array(size);
    let k = 0;
    let a = 0;
    for (let p = 0; p < oldPoints.length; p++) {
      const o = remap[oldOwners[p]!]!;
      if (o < 0) continue;
      const h = oldPoints[p]!;
      while (a < addSize && (addK[a]! < h || (addK[a] === h && addV[a]! < o))) {
        points[k] = addK[a]!;
        owners[k++] = addV[a++]!;
      }
      points[k] = h;
      owners[k++] = o;
    }
    while (a < addSize) {
      points[k] = addK[a]!;
      owners[k++] = addV[a++]!;
    }
    this.points = points;
    this.owners = owners;
  }

  /** The bucket index: the ring's first point in each of 2^bits equal ranges of positions. */
  private index(): void {
    const points = this.points;
    const size = points.length;
    const bits = Math.max(4, Math.min(20, Math.ceil(Math.log2(size)) - 2));
    const buckets = new Int32Array((1 << bits) + 1);
    const shift = 32 - bits;
    let p = 0;
    for (let bkt = 0; bkt < 1 << bits; bkt++) {
      while (p < size && points[p]! >>> shift < bkt) p++;
      buckets[bkt] = p;
    }
    buckets[1 << bits] = size;
    this.buckets = buckets;
    this.shift = shift;
  }

  protected pickTable(ctx: PickContext): Endpoint | null {
    const eps = this.eps;
    const size = this.points.length;
    if (size === 0) return null;
    const key = ctx.hash;
    const h = key === undefined ? (this.rng() * 4294967296) >>> 0 : hashKey(key);
    // The first point >= h, or the first point of the ring: a binary search within h's bucket.
    const points = this.points;
    const bkt = h >>> this.shift;
    let lo = this.buckets[bkt]!;
    let hi = this.buckets[bkt + 1]!;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    let p = lo === size ? 0 : lo;
    const gate = ctx.available;
    if (gate === undefined) return eps[this.owners[p]!]!;
    const memo = this.memo;
    memo.begin();
    for (let s = 0; s < size; s++) {
      const i = this.owners[p]!;
      if (!memo.marked(i)) {
        const e = eps[i]!;
        if (gate(e)) return e;
        memo.mark(i);
        if (memo.count === eps.length) return null;
      }
      p = p + 1 === size ? 0 : p + 1;
    }
    return null;
  }
}

/** The ring-hash balancer, as createBalancer (index.ts) finds it. */
export const ringHashBalancer: BalancerRegistration<'ring-hash', Omit<RingHashOptions, 'clock' | 'rng'>> = {
  kind: 'ring-hash',
  schema: optionsSchema('ring-hash', { minRingSize: Type.Optional(Type.Integer({ description: `Fewest points on the ring; default ${RING_HASH_DEFAULTS.minRingSize}.` })), maxRingSize: Type.Optional(Type.Integer({ description: `Most points on the ring; default ${RING_HASH_DEFAULTS.maxRingSize}.` })) }),
  factory: (options, deps) => new RingHashBalancer({ ...options, ...deps }),
};
