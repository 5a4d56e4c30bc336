/**
 * Weighted sampling over positions whose weights change one at a time: a Fenwick tree (binary
 * indexed tree) of the weights. A draw is O(log n) (one random number, a descent of the tree), or
 * O(1) when every weight is the same (the usual case: a plain uniform index); setting, appending
 * or dropping the last weight is O(log n). It replaced Walker's alias table (O(1) draws, but O(n)
 * to rebuild on every change), so that a balancer follows a change of one endpoint among 50,000
 * without redoing the others (issue 11 §6).
 *
 * Weights are non-negative integers (endpoint weights), so sums are exact in doubles.
 */
import type { Rng } from './balancer.js';

export class WeightedIndex {
  private weights = new Float64Array(16);
  /** 1-based: tree[i] sums the weights of positions (i - lowbit(i), i]. */
  private tree = new Float64Array(17);
  private n = 0;
  private sum = 0;
  /** How many positions hold each weight: one weight in all means a uniform draw. */
  private readonly counts = new Map<number, number>();

  get size(): number {
    return this.n;
  }

  get total(): number {
    return this.sum;
  }

  /** All weights equal: a draw is a plain uniform index. */
  get uniform(): boolean {
    return this.counts.size <= 1;
  }

  weight(i: number): number {
    return this.weights[i]!;
  }

  clear(): void {
    this.weights.fill(0, 0, this.n);
    this.tree.fill(0);
    this.n = 0;
    this.sum = 0;
    this.counts.clear();
  }

  push(w: number): void {
    if (this.n === this.weights.length) this.grow();
    this.n++;
    this.count(w, 1);
    this.weights[this.n - 1] = w;
    this.add(this.n - 1, w);
  }

  set(i: number, w: number): void {
    const old = this.weights[i]!;
    if (old === w) return;
    this.count(old, -1);
    this.count(w, 1);
    this.weights[i] = w;
    this.add(i, w - old);
  }

  /** Drops the last position. */
  pop(): void {
    const i = this.n - 1;
    const old = this.weights[i]!;
    this.count(old, -1);
    this.weights[i] = 0;
    this.add(i, -old);
    this.n--;
  }

  /** A position drawn with probability weight / total (size >= 1). */
  sample(rng: Rng): number {
    const n = this.n;
    if (this.counts.size <= 1) {
      const i = (rng() * n) | 0;
      return i < n ? i : n - 1;
    }
    // The first position whose prefix sum exceeds the target: descend by powers of two.
    const tree = this.tree;
    const cap = tree.length - 1;
    let target = rng() * this.sum;
    let pos = 0;
    for (let step = 1 << (31 - Math.clz32(cap)); step > 0; step >>>= 1) {
      const next = pos + step;
      if (next <= cap && tree[next]! <= target) {
        pos = next;
        target -= tree[next]!;
      }
    }
    return pos < n ? pos : n - 1;
  }

  private add(i: number, delta: number): void {
    this.sum += delta;
    const tree = this.tree;
    for (let j = i + 1; j < tree.length; j += j & -j) tree[j] = tree[j]! + delta;
  }

  private count(w: number, d: number): void {
    const c = (this.counts.get(w) ?? 0) + d;
    if (c === 0) this.counts.delete(w);
    else this.counts.set(w, c);
  }

  /** Doubles the capacity; the tree is rebuilt in O(n) (amortised O(1) per push). */
  private grow(): void {
    const cap = this.weights.length * 2;
    const weights = new Float64Array(cap);
    weights.set(this.weights);
    const tree = new Float64Array(cap + 1);
    for (let i = 1; i <= cap; i++) {
      tree[i] = tree[i]! + weights[i - 1]!;
      const parent = i + (i & -i);
      if (parent <= cap) tree[parent] = tree[parent]! + tree[i]!;
    }
    this.weights = weights;
    this.tree = tree;
  }
}
