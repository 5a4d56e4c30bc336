/**
 * The load-balancer section of a service (in the Service resource and in mesh files): which
 * algorithm callers use to pick an instance, and, for consistent hashing, the request's hash key.
 *
 * BALANCER_KINDS is the one list of kinds: src/balance registers one `{kind, schema, factory}`
 * per entry (its registry is typed by this list, so a kind without a factory does not compile).
 */
import { Type, type Static } from '@sinclair/typebox';
import { Enum } from './fields.js';
import { HTTP_TOKEN_PATTERN } from './names.js';

export { HTTP_TOKEN_PATTERN };

/** Load balancer kinds a service may choose. */
export const BALANCER_KINDS = ['round-robin', 'weighted-round-robin', 'random', 'least-request', 'peak-ewma', 'ring-hash', 'maglev'] as const;
export type BalancerKind = (typeof BALANCER_KINDS)[number];
export const DEFAULT_BALANCER: BalancerKind = 'peak-ewma';
/** Kinds that pick by a request's hash key, and so need `hashKey`. */
export const HASHING_BALANCERS: readonly BalancerKind[] = ['ring-hash', 'maglev'];

export function isBalancerKind(kind: unknown): kind is BalancerKind {
  return typeof kind === 'string' && (BALANCER_KINDS as readonly string[]).includes(kind);
}

export const HashKeySchema = Type.Object(
  {
    type: Enum(['header', 'cookie', 'source-address'] as const, 'Where the hash key comes from.'),
    name: Type.Optional(Type.String({ pattern: HTTP_TOKEN_PATTERN, maxLength: 256, description: 'The header or cookie name (header and cookie only; required there).' })),
  },
  { additionalProperties: false, description: 'The request hash key of ring-hash and maglev.' },
);

export const BalancerSchema = Type.Object(
  {
    kind: Type.Optional(Enum(BALANCER_KINDS, `The algorithm callers of this service use to pick an instance. Default ${DEFAULT_BALANCER}.`)),
    hashKey: Type.Optional(HashKeySchema),
  },
  { additionalProperties: false, description: 'How callers balance requests over the instances of this service.' },
);

export type RawBalancer = Static<typeof BalancerSchema>;

export type HashKey = { readonly type: 'header'; readonly name: string } | { readonly type: 'cookie'; readonly name: string } | { readonly type: 'source-address' };

export interface BalancerPolicy {
  readonly kind: BalancerKind;
  /** Set for ring-hash and maglev, null otherwise. */
  readonly hashKey: HashKey | null;
}

/** The policy of a service that sets no balancer. */
export const DEFAULT_BALANCER_POLICY: BalancerPolicy = Object.freeze({ kind: DEFAULT_BALANCER, hashKey: null });

/**
 * Checks what the schema cannot (a hash key where, and only where, it applies) and returns the
 * frozen policy. `push(field, message)` collects problems; fields are relative to `balancer`.
 */
export function buildBalancer(raw: RawBalancer | undefined, push: (field: string, message: string) => void): BalancerPolicy {
  const b = raw ?? {};
  const kind = b.kind ?? DEFAULT_BALANCER;
  const hashing = HASHING_BALANCERS.includes(kind);
  if (hashing && b.hashKey === undefined) push('balancer.hashKey', `is required for the ${kind} balancer`);
  if (!hashing && b.hashKey !== undefined) push('balancer.hashKey', `applies to the ${HASHING_BALANCERS.join(' and ')} balancers only, not ${kind}`);
  let hashKey: HashKey | null = null;
  const hk = b.hashKey;
  if (hk !== undefined) {
    if (hk.type === 'source-address') {
      if (hk.name !== undefined) push('balancer.hashKey.name', 'applies to header and cookie hash keys only');
      hashKey = Object.freeze({ type: 'source-address' });
    } else if (hk.name === undefined) {
      push('balancer.hashKey.name', `is required for a ${hk.type} hash key`);
    } else {
      hashKey = Object.freeze({ type: hk.type, name: hk.name });
    }
  }
  return Object.freeze({ kind, hashKey: hashing ? hashKey : null });
}
