/**
 * Weighted sampling in O(1) per draw: Walker's alias method, built with Vose's stable variant.
 * Built on update (O(n)); a draw costs one random number, one multiply and two array reads.
 */
import type { Rng } from './balancer.js';

export class AliasTable {
  readonly n: number;
  /** All weights equal: a draw is a plain uniform index. */
  readonly uniform: boolean;
  private readonly prob: Float64Array;
  private readonly alias: Int32Array;

  /** `weights` must be positive and finite. */
  constructor(weights: ArrayLike<number>) {
    const n = weights.length;
    this.n = n;
    this.prob = new Float64Array(n);
    this.alias = new Int32Array(n);
    let total = 0;
    let uniform = true;
    for (let i = 0; i < n; i++) {
      total += weights[i]!;
      if (weights[i] !== weights[0]) uniform = false;
    }
    this.uniform = uniform;
    if (uniform || n === 0) return;
    // Scaled so that the average is 1; split into those below and those at or above 1.
    const scaled = new Float64Array(n);
    const small = new Int32Array(n);
    const large = new Int32Array(n);
    let ns = 0;
    let nl = 0;
    for (let i = 0; i < n; i++) {
      scaled[i] = (weights[i]! * n) / total;
      if (scaled[i]! < 1) small[ns++] = i;
      else large[nl++] = i;
    }
    while (ns > 0 && nl > 0) {
      const s = small[--ns]!;
      const l = large[--nl]!;
      this.prob[s] = scaled[s]!;
      this.alias[s] = l;
      scaled[l] = scaled[l]! + scaled[s]! - 1;
      if (scaled[l]! < 1) small[ns++] = l;
      else large[nl++] = l;
    }
    // What is left is 1 up to rounding.
    while (nl > 0) this.prob[large[--nl]!] = 1;
    while (ns > 0) this.prob[small[--ns]!] = 1;
  }

  /** An index drawn with probability weight/total (n >= 1). */
  sample(rng: Rng): number {
    const u = rng() * this.n;
    let i = u | 0;
    if (i >= this.n) i = this.n - 1;
    if (this.uniform) return i;
    return u - i < this.prob[i]! ? i : this.alias[i]!;
  }
}
