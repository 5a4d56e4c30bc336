/**
 * Skein's load balancers. `createBalancer(kind, opts)` makes one by its resource name; the
 * default kind is `peak-ewma`. See docs/load-balancing.md for when to choose which.
 */
import type { Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { BALANCER_KINDS, DEFAULT_BALANCER_KIND, type Balancer, type BalancerKind, type Rng } from './balancer.js';
import { LeastRequestBalancer } from './least-request.js';
import { MaglevBalancer } from './maglev.js';
import { PeakEwmaBalancer } from './peak-ewma.js';
import { RandomBalancer } from './random.js';
import { RingHashBalancer } from './ring-hash.js';
import { RoundRobinBalancer } from './round-robin.js';
import { WeightedRoundRobinBalancer } from './weighted-round-robin.js';

export * from './balancer.js';
export { createRng } from './rng.js';
export { hashBytes, hashKey, hashString } from './hash.js';
export { compileHashKey, cookieValue, hashInputOf, hashKeyOf, normalizeSourceAddress, type HashInput, type HashKeyExtractor, type HashKeySpec, type HeaderValue } from './hash-key.js';
export { RoundRobinBalancer, type RoundRobinOptions } from './round-robin.js';
export { WeightedRoundRobinBalancer, nginxCycle, type WeightedRoundRobinOptions } from './weighted-round-robin.js';
export { RandomBalancer, type RandomOptions } from './random.js';
export { LeastRequestBalancer, type LeastRequestOptions } from './least-request.js';
export { PeakEwmaBalancer, PEAK_EWMA_DEFAULTS, type PeakEwmaOptions } from './peak-ewma.js';
export { RingHashBalancer, RING_HASH_DEFAULTS, type RingHashOptions } from './ring-hash.js';
export { TABLE_REBUILD } from './table.js';
export { MaglevBalancer, MAGLEV_DEFAULTS, isPrime, maglevTable, type MaglevOptions } from './maglev.js';

/**
 * Options of every kind in one bag (what a service resource's load-balancer section maps to);
 * each kind reads the ones it knows and ignores the rest.
 */
export interface BalancerOptions {
  /** peak-ewma (its decay), weighted-round-robin, ring-hash and maglev (paced table rebuilds, table.ts). Default: the system clock. */
  clock?: Clock;
  /** All kinds: first positions, draws, and requests without a hash key. Default Math.random. */
  rng?: Rng;
  /** peak-ewma: decay time constant in ms (default 10000). */
  decayMs?: number;
  /** peak-ewma: estimate for endpoints without responses yet, in ms (default 30). */
  defaultRttMs?: number;
  /** ring-hash: fewest / most points on the ring (defaults 4096 / 1048576). */
  minRingSize?: number;
  maxRingSize?: number;
  /** maglev: lookup table size, a prime (default 65537). */
  tableSize?: number;
  /** weighted-round-robin: limits of the precomputed cycle (defaults 65536 / 4194304). */
  maxSchedule?: number;
  maxBuildSteps?: number;
}

export function isBalancerKind(kind: unknown): kind is BalancerKind {
  return typeof kind === 'string' && (BALANCER_KINDS as readonly string[]).includes(kind);
}

/**
 * A balancer of this kind (default peak-ewma), with no endpoints until `update`. Throws
 * SkeinError(SKEIN_E_VALIDATION, field = the option) for an unknown kind or a bad option.
 */
export function createBalancer(kind: BalancerKind = DEFAULT_BALANCER_KIND, opts: BalancerOptions = {}): Balancer {
  switch (kind) {
    case 'round-robin':
      return new RoundRobinBalancer({ rng: opts.rng });
    case 'weighted-round-robin':
      return new WeightedRoundRobinBalancer({ clock: opts.clock, rng: opts.rng, maxSchedule: opts.maxSchedule, maxBuildSteps: opts.maxBuildSteps });
    case 'random':
      return new RandomBalancer({ rng: opts.rng });
    case 'least-request':
      return new LeastRequestBalancer({ rng: opts.rng });
    case 'peak-ewma':
      return new PeakEwmaBalancer({ clock: opts.clock, rng: opts.rng, decayMs: opts.decayMs, defaultRttMs: opts.defaultRttMs });
    case 'ring-hash':
      return new RingHashBalancer({ clock: opts.clock, rng: opts.rng, minRingSize: opts.minRingSize, maxRingSize: opts.maxRingSize });
    case 'maglev':
      return new MaglevBalancer({ clock: opts.clock, rng: opts.rng, tableSize: opts.tableSize });
    default:
      throw new SkeinError('SKEIN_E_VALIDATION', `unknown load balancer "${String(kind)}" (one of ${BALANCER_KINDS.join(', ')})`, { field: 'kind' });
  }
}
