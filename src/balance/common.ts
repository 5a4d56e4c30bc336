/** Pieces shared by the balancers (not part of the public surface; index.ts re-exports none). */
import { SkeinError } from '../core/errors.js';
import { EndpointSet, type Endpoint, type EndpointChanges } from '../discovery/endpoint.js';
import { NOOP_COMPLETION, type Balancer, type BalancerKind, type Completion, type Gate, type PickContext, type Rng } from './balancer.js';

/** The context of `pick()` called without one. */
export const NO_CONTEXT: PickContext = Object.freeze({});

/**
 * Base of every balancer: keeps the snapshot and tells the balancer what changed. When the new
 * set was made from the current one by one `apply` (how the watch stream delivers every change),
 * the balancer follows the change in O(changes) (`follow`); otherwise (a set of another lineage,
 * or several steps ahead) it rebuilds from the whole set (`rebuild`). Issue 11 §6: a rebuild per
 * change made a proxy absorb ~100 changes/s at 25,000 instances.
 */
export abstract class BaseBalancer implements Balancer {
  abstract readonly kind: BalancerKind;
  private currentSet: EndpointSet = EndpointSet.empty();

  get set(): EndpointSet {
    return this.currentSet;
  }

  get size(): number {
    return this.currentSet.pickable;
  }

  update(set: EndpointSet): void {
    const prev = this.currentSet;
    if (set === prev) return;
    this.currentSet = set;
    const changes = set.changesSince(prev);
    if (changes === null) this.rebuild(prev);
    else this.follow(changes, prev);
  }

  /** `this.set` replaced `prev` with no known relation: build the state from the whole set. */
  protected abstract rebuild(prev: EndpointSet): void;

  /** `this.set` is `prev` with these changes: apply them, O(changes). */
  protected abstract follow(changes: EndpointChanges, prev: EndpointSet): void;

  abstract pick(ctx?: PickContext): Endpoint | null;

  start(_e: Endpoint): Completion {
    return NOOP_COMPLETION;
  }
}

/** True when `e` is the same process as `old` (same address and port): its state may be kept. */
export function sameTarget(old: Endpoint, e: Endpoint): boolean {
  return old.address === e.address && old.port === e.port;
}

/**
 * Remembers, without allocating per pick, which endpoint indexes were found unavailable during
 * one pick, so a walk over a ring or table calls the gate at most once per endpoint.
 */
export class GateMemo {
  private marks = new Uint32Array(0);
  private epoch = 0;
  /** How many distinct indexes were marked in this epoch. */
  count = 0;

  resize(n: number): void {
    this.marks = new Uint32Array(n);
    this.epoch = 0;
  }

  /** Starts a new pick: forgets every mark in O(1). */
  begin(): void {
    this.count = 0;
    if (++this.epoch === 0xffffffff) {
      this.marks.fill(0);
      this.epoch = 1;
    }
  }

  marked(i: number): boolean {
    return this.marks[i] === this.epoch;
  }

  mark(i: number): void {
    this.marks[i] = this.epoch;
    this.count++;
  }
}

/**
 * Weighted random choice among the endpoints the gate lets through, in one pass (O(n), one
 * random number per available endpoint): the slow path when quick tries found nothing.
 */
export function weightedScan(eps: readonly Endpoint[], gate: Gate, rng: Rng): Endpoint | null {
  let total = 0;
  let chosen: Endpoint | null = null;
  for (let i = 0; i < eps.length; i++) {
    const e = eps[i]!;
    if (!gate(e)) continue;
    total += e.weight;
    if (rng() * total < e.weight) chosen = e;
  }
  return chosen;
}

/** A uniformly random index in 0..n-1 (n >= 1). */
export function randomIndex(rng: Rng, n: number): number {
  const i = (rng() * n) | 0;
  return i < n ? i : n - 1;
}

export function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

export function optionError(kind: string, field: string, message: string): SkeinError {
  return new SkeinError('SKEIN_E_VALIDATION', `${kind} balancer: ${field} ${message}`, { field });
}

export function checkRng(kind: string, rng: unknown): Rng {
  if (rng === undefined) return Math.random;
  if (typeof rng !== 'function') throw optionError(kind, 'rng', 'must be a function returning numbers in [0, 1)');
  return rng as Rng;
}

export function checkNumber(kind: string, field: string, v: unknown, dflt: number, min: number, max: number, integer = false): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw optionError(kind, field, `must be ${integer ? 'an integer' : 'a number'} in ${min}..${max}, not ${String(v)}`);
  }
  return v;
}
