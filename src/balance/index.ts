/**
 * Skein's load balancers. `createBalancer(kind, deps, options)` makes one by its resource name
 * from the registrations below (`{kind, schema, factory}`, one per algorithm's file); the default
 * kind is `peak-ewma`. See docs/load-balancing.md for when to choose which.
 */
import { SkeinError } from '../core/errors.js';
import { check, validationError } from '../api/validate.js';
import { BALANCER_KINDS, DEFAULT_BALANCER_KIND, isBalancerKind, type Balancer, type BalancerDeps, type BalancerKind, type BalancerRegistration } from './balancer.js';
import { leastRequestBalancer } from './least-request.js';
import { maglevBalancer } from './maglev.js';
import { peakEwmaBalancer } from './peak-ewma.js';
import { randomBalancer } from './random.js';
import { ringHashBalancer } from './ring-hash.js';
import { roundRobinBalancer } from './round-robin.js';
import { weightedRoundRobinBalancer } from './weighted-round-robin.js';

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
 * Every algorithm by kind. Typed by BALANCER_KINDS (src/api/balancer.ts), the one list of kinds:
 * a kind without a registration, or a registration under another kind's name, does not compile.
 */
export const BALANCERS: { readonly [K in BalancerKind]: BalancerRegistration<K, never> } = Object.freeze({
  'round-robin': roundRobinBalancer,
  'weighted-round-robin': weightedRoundRobinBalancer,
  random: randomBalancer,
  'least-request': leastRequestBalancer,
  'peak-ewma': peakEwmaBalancer,
  'ring-hash': ringHashBalancer,
  maglev: maglevBalancer,
});

/**
 * A balancer of this kind (default peak-ewma), with no endpoints until `update`. `options` are the
 * kind's own (its registration's schema: a field another kind knows is refused here). Throws
 * SkeinError(SKEIN_E_VALIDATION, field = the option) for an unknown kind or a bad option.
 */
export function createBalancer(kind: BalancerKind = DEFAULT_BALANCER_KIND, deps: BalancerDeps = {}, options: object = {}): Balancer {
  const reg = isBalancerKind(kind) ? (BALANCERS[kind] as BalancerRegistration) : undefined;
  if (reg === undefined) throw new SkeinError('SKEIN_E_VALIDATION', `unknown load balancer "${String(kind)}" (one of ${BALANCER_KINDS.join(', ')})`, { field: 'kind' });
  // No options where none is required is valid without compiling the schema (a proxy's balancers
  // mostly get none: Ajv then stays unloaded, issue 16).
  const none = Object.keys(options).length === 0 && (reg.schema.required ?? []).length === 0;
  const problems = none ? [] : check(reg.schema, options);
  if (problems.length > 0) throw validationError(problems, `${kind} balancer`);
  return reg.factory(options, deps);
}
