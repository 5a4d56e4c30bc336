/**
 * The load-balancer section of a service (in the Service resource and in mesh files): which
 * algorithm callers use to pick an instance, and, for consistent hashing, the request's hash key.
 */
import { Type, type Static } from '@sinclair/typebox';

/**
 * Load balancer kinds a service may choose. The same list as BALANCER_KINDS in src/balance
 * (api sits below balance, so it is repeated here; a unit test keeps the two equal).
 */
export const BALANCER_KINDS = ['round-robin', 'weighted-round-robin', 'random', 'least-request', 'peak-ewma', 'ring-hash', 'maglev'] as const;
export type BalancerKind = (typeof BALANCER_KINDS)[number];
export const DEFAULT_BALANCER: BalancerKind = 'peak-ewma';
/** Kinds that pick by a request's hash key, and so need `hashKey`. */
export const HASHING_BALANCERS: readonly BalancerKind[] = ['ring-hash', 'maglev'];

/** An HTTP token: what header and cookie names are made of. */
export const HTTP_TOKEN_PATTERN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";

const StringEnum = <T extends readonly string[]>(values: T, description: string) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: [...values], description });

export const HashKeySchema = Type.Object(
  {
    type: StringEnum(['header', 'cookie', 'source-address'] as const, 'Where the hash key comes from.'),
    name: Type.Optional(Type.String({ pattern: HTTP_TOKEN_PATTERN, maxLength: 256, description: 'The header or cookie name (header and cookie only; required there).' })),
  },
  { additionalProperties: false, description: 'The request hash key of ring-hash and maglev.' },
);

export const BalancerSchema = Type.Object(
  {
    kind: Type.Optional(StringEnum(BALANCER_KINDS, `The algorithm callers of this service use to pick an instance. Default ${DEFAULT_BALANCER}.`)),
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

/**
 * Checks what the schema cannot (a hash key where, and only where, it applies) and returns the
 * frozen policy. `push(field, message)` collects problems; fields are relative to `balancer`.
 */
export function buildBalancer(raw: RawBalancer | undefined, push: (field: string, message: string) => void): BalancerPolicy {
  const b = raw ?? {};
  const kind = b.kind ?? DEFAULT_BALANCER;
  const hashing = HASHING_BALANCERS.includes(kind);
  if (hashing && b.hashKey === undefined) push('balancer.hashKey', `is required for the ${kind} balancer`);
  if (!hashing && b.hashKey !== undefined) push('balancer.hashKey', `applies to the ring-hash and maglev balancers only, not ${kind}`);
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
