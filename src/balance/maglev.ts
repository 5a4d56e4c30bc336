/**
 * Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
 * Balancer", NSDI 2016): a lookup table of M slots (M prime, default 65537) filled so that each
 * endpoint owns about its weight's share of the slots; a request goes to the owner of slot
 * hash(key) mod M. A pick is one hash and one array read, O(1).
 *
 * Filling: each endpoint has its own order of preference over all slots, a permutation given by
 * an offset and a skip taken from two independent hashes of its key (offset + j x skip mod M; M
 * prime makes every skip visit every slot). Endpoints take turns, in key order, each claiming the
 * next still-free slot of its own order, until the table is full. Weights: in every round an
 * endpoint earns weight / (largest weight) of a turn and claims a slot per whole turn earned, so
 * shares follow weights to within a slot or so.
 *
 * When an endpoint leaves, its slots go to others and a few other slots change hands as well
 * (the paper's trade: better balance and O(1) lookups for slightly more than minimal disruption);
 * with 10 endpoints about 10-11% of keys move. Table size should be well above the number of
 * endpoints (100x or more keeps shares within about 1%). Rebuilt on updates, O(M log M), coalesced
 * for large sets (table.ts: between rebuilds, the slots of endpoints that left go to the next
 * slots' owners).
 *
 * - No hash key in the context: a uniformly random slot, i.e. a weighted random pick.
 * - Gate: from the key's slot, the following slots are tried in order until one's owner is
 *   available (the gate is asked at most once per endpoint); null when none is.
 * - Weight 0: no slots.
 */
import { systemClock, type Clock } from '../core/clock.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { Type } from '@sinclair/typebox';
import { type PickContext, type Rng, optionsSchema, type BalancerRegistration } from './balancer.js';
import { GateMemo, checkNumber, checkRng, optionError } from './common.js';
import { TableBalancer } from './table.js';
import { hashKey, hashString } from './hash.js';

export interface MaglevOptions {
  /** Paces table rebuilds (table.ts); default the system clock. */
  clock?: Clock;
  /** For requests without a hash key; default Math.random. */
  rng?: Rng;
  /** Lookup table size: a prime; default 65537. */
  tableSize?: number;
}

export const MAGLEV_DEFAULTS = Object.freeze({ tableSize: 65537 });

const OFFSET_SEED = 0x5bd1e995;
const SKIP_SEED = 0x1b873593;

export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

export class MaglevBalancer extends TableBalancer {
  readonly kind = 'maglev' as const;
  private readonly rng: Rng;
  readonly tableSize: number;
  private readonly memo = new GateMemo();
  /** Slot -> index in `eps` (empty while there are no endpoints). */
  private table: Int32Array = new Int32Array(0);

  constructor(opts: MaglevOptions = {}) {
    super(opts.clock ?? systemClock);
    this.rng = checkRng(this.kind, opts.rng);
    this.tableSize = checkNumber(this.kind, 'tableSize', opts.tableSize, MAGLEV_DEFAULTS.tableSize, 3, 1 << 24, true);
    if (!isPrime(this.tableSize)) throw optionError(this.kind, 'tableSize', `must be a prime (e.g. 65537, 131071, 655373), not ${this.tableSize}`);
  }

  protected buildTable(): void {
    const eps = this.eps;
    const n = eps.length;
    this.memo.resize(n);
    if (n === 0) {
      this.table = new Int32Array(0);
      return;
    }
    this.table = maglevTable(eps, this.tableSize);
  }

  protected pickTable(ctx: PickContext): Endpoint | null {
    const eps = this.eps;
    const table = this.table;
    const m = table.length;
    if (m === 0) return null;
    const key = ctx.hash;
    let slot: number;
    if (key === undefined) {
      slot = (this.rng() * m) | 0;
      if (slot >= m) slot = m - 1;
    } else slot = hashKey(key) % m;
    const gate = ctx.available;
    if (gate === undefined) return eps[table[slot]!]!;
    const memo = this.memo;
    memo.begin();
    for (let s = 0; s < m; s++) {
      const i = table[slot]!;
      if (!memo.marked(i)) {
        const e = eps[i]!;
        if (gate(e)) return e;
        memo.mark(i);
        if (memo.count === eps.length) return null;
      }
      slot = slot + 1 === m ? 0 : slot + 1;
    }
    return null;
  }
}

/** The Maglev lookup table for these endpoints (all of weight > 0, in key order). */
export function maglevTable(eps: readonly Endpoint[], m: number): Int32Array {
  const n = eps.length;
  const table = new Int32Array(m).fill(-1);
  const next = new Float64Array(n);
  const skip = new Float64Array(n);
  const weight = new Float64Array(n);
  const credit = new Float64Array(n);
  let maxWeight = 0;
  for (let i = 0; i < n; i++) {
    const e = eps[i]!;
    next[i] = hashString(e.key, OFFSET_SEED) % m;
    skip[i] = (hashString(e.key, SKIP_SEED) % (m - 1)) + 1;
    weight[i] = e.weight;
    if (e.weight > maxWeight) maxWeight = e.weight;
  }
  let filled = 0;
  while (filled < m) {
    for (let i = 0; i < n && filled < m; i++) {
      credit[i] = credit[i]! + weight[i]!;
      if (credit[i]! < maxWeight) continue;
      credit[i] = credit[i]! - maxWeight;
      let p = next[i]!;
      const sk = skip[i]!;
      while (table[p]! >= 0) {
        p += sk;
        if (p >= m) p -= m;
      }
      table[p] = i;
      p += sk;
      next[i] = p >= m ? p - m : p;
      filled++;
    }
  }
  return table;
}

/** The maglev balancer, as createBalancer (index.ts) finds it. */
export const maglevBalancer: BalancerRegistration<'maglev', Omit<MaglevOptions, 'clock' | 'rng'>> = {
  kind: 'maglev',
  schema: optionsSchema('maglev', { tableSize: Type.Optional(Type.Integer({ description: `Lookup table size, a prime; default ${MAGLEV_DEFAULTS.tableSize}.` })) }),
  factory: (options, deps) => new MaglevBalancer({ ...options, ...deps }),
};
