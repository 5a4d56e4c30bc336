/**
 * Endpoints and endpoint sets: what the balancers choose from.
 *
 * An `Endpoint` is one instance of a service as the data plane sees it: where to connect
 * (address, port), how much traffic it should get (weight) and what it is (zone, version, labels).
 * Its `key` is `${service}/${id}`: the registry's identity of the instance. The key is stable
 * across updates (an instance that re-registers with a new address keeps its key), it is what an
 * `Update` of type `remove` names, and it is what per-endpoint state (in-flight counts, latency
 * estimates, consistent-hash positions, outlier ejections) is keyed by.
 *
 * Weight: a non-negative integer (the registry allows 0..10000). Weight 0 means drained: every
 * balancer skips it, always (even when nothing else is left, in which case `pick` returns null).
 *
 * An `EndpointSet` is an immutable snapshot. `apply(update)` returns the next snapshot and never
 * changes the one it is called on; it returns the same object when the update changes nothing.
 */
import { SkeinError } from '../core/errors.js';

export interface Endpoint {
  /** `${service}/${id}`; see `endpointKey`. */
  readonly key: string;
  readonly service: string;
  readonly id: string;
  readonly address: string;
  readonly port: number;
  /** Relative share of traffic; 0 = drained (never picked). */
  readonly weight: number;
  readonly zone: string;
  readonly version: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** What `makeEndpoint` accepts: an API `Instance`, a watch-stream instance, or a literal. */
export interface EndpointInput {
  readonly service: string;
  readonly id: string;
  readonly address: string;
  readonly port: number;
  /** Default 1. */
  readonly weight?: number;
  /** Default ''. */
  readonly zone?: string;
  /** Default ''. */
  readonly version?: string;
  /** Default {}. */
  readonly labels?: Readonly<Record<string, string>>;
  /** When given, it must equal `${service}/${id}`. */
  readonly key?: string;
}

export type Update =
  | { readonly type: 'reset'; readonly endpoints: readonly EndpointInput[] }
  | { readonly type: 'add'; readonly endpoints: readonly EndpointInput[] }
  | { readonly type: 'remove'; readonly keys: readonly string[] };

/** The largest weight an endpoint may have (the registry's own bound is 10000). */
export const MAX_ENDPOINT_WEIGHT = 1_000_000;

/** The key of an endpoint: `${service}/${id}`. */
export function endpointKey(service: string, id: string): string {
  return `${service}/${id}`;
}

/** Endpoints made here (validated and frozen): `EndpointSet` takes them as they are. */
const made = new WeakSet<object>();

function invalid(field: string, message: string): SkeinError {
  return new SkeinError('SKEIN_E_VALIDATION', `endpoint: ${message}`, { field });
}

/**
 * Validates an endpoint and returns it frozen, with defaults filled in. Returns the argument
 * itself when it was made here already. Throws SkeinError(SKEIN_E_VALIDATION) naming the field.
 */
export function makeEndpoint(input: EndpointInput | Endpoint): Endpoint {
  if (made.has(input)) return input as Endpoint;
  const { service, id, address, port } = input;
  if (typeof service !== 'string' || service === '') throw invalid('service', 'service must be a non-empty string');
  if (typeof id !== 'string' || id === '') throw invalid('id', 'id must be a non-empty string');
  if (typeof address !== 'string' || address === '') throw invalid('address', 'address must be a non-empty string');
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid('port', `port must be an integer in 1..65535, not ${String(port)}`);
  const weight = input.weight ?? 1;
  if (!Number.isInteger(weight) || weight < 0 || weight > MAX_ENDPOINT_WEIGHT) {
    throw invalid('weight', `weight must be an integer in 0..${MAX_ENDPOINT_WEIGHT}, not ${String(weight)}`);
  }
  const key = endpointKey(service, id);
  if (input.key !== undefined && input.key !== key) throw invalid('key', `key "${input.key}" is not "${key}" (service/id)`);
  const zone = input.zone ?? '';
  const version = input.version ?? '';
  if (typeof zone !== 'string') throw invalid('zone', 'zone must be a string');
  if (typeof version !== 'string') throw invalid('version', 'version must be a string');
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(input.labels ?? {})) {
    if (typeof v !== 'string') throw invalid(`labels.${k}`, 'label values must be strings');
    labels[k] = v;
  }
  const e: Endpoint = Object.freeze({ key, service, id, address, port, weight, zone, version, labels: Object.freeze(labels) });
  made.add(e);
  return e;
}

/** True when two endpoints have the same fields (labels compared by content). */
export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  if (a === b) return true;
  if (a.key !== b.key || a.address !== b.address || a.port !== b.port || a.weight !== b.weight || a.zone !== b.zone || a.version !== b.version) return false;
  const ak = Object.keys(a.labels);
  if (ak.length !== Object.keys(b.labels).length) return false;
  for (const k of ak) if (a.labels[k] !== b.labels[k]) return false;
  return true;
}

/** Orders keys by UTF-16 code units (not by locale): the same order on every machine. */
function byKey(a: Endpoint, b: Endpoint): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** An immutable snapshot of a service's endpoints. */
export class EndpointSet {
  private static readonly EMPTY = new EndpointSet(new Map(), Object.freeze([]), 0);

  private constructor(
    private readonly byKeyMap: ReadonlyMap<string, Endpoint>,
    private readonly sorted: readonly Endpoint[],
    /** 0 for the empty set; every `apply` that changes something adds 1. */
    readonly version: number,
  ) {
    Object.freeze(this);
  }

  /** The empty set (version 0). */
  static empty(): EndpointSet {
    return EndpointSet.EMPTY;
  }

  /** A set holding these endpoints (the same as `empty().apply({ type: 'reset', endpoints })`). */
  static of(endpoints: readonly EndpointInput[]): EndpointSet {
    return EndpointSet.EMPTY.apply({ type: 'reset', endpoints });
  }

  get size(): number {
    return this.sorted.length;
  }

  /** All endpoints, ordered by key. The array is frozen and shared: do not copy it per request. */
  list(): readonly Endpoint[] {
    return this.sorted;
  }

  get(key: string): Endpoint | undefined {
    return this.byKeyMap.get(key);
  }

  has(key: string): boolean {
    return this.byKeyMap.has(key);
  }

  /**
   * The snapshot after `update`:
   * - reset: exactly the given endpoints;
   * - add: the given endpoints added, each replacing the one with the same key;
   * - remove: the endpoints with these keys removed (unknown keys are ignored).
   * Within one update, the last endpoint given for a key wins. Invalid endpoints throw
   * SkeinError(SKEIN_E_VALIDATION) and leave nothing changed. Returns `this` (same version) when
   * the update changes nothing, otherwise a new set with `version + 1`.
   */
  apply(update: Update): EndpointSet {
    switch (update.type) {
      case 'reset': {
        const next = new Map<string, Endpoint>();
        for (const input of update.endpoints) {
          const e = makeEndpoint(input);
          next.set(e.key, e);
        }
        let same = next.size === this.byKeyMap.size;
        if (same) {
          for (const [k, e] of next) {
            const old = this.byKeyMap.get(k);
            if (old === undefined || !sameEndpoint(old, e)) {
              same = false;
              break;
            }
          }
        }
        return same ? this : this.next(next);
      }
      case 'add': {
        const incoming = update.endpoints.map(makeEndpoint);
        let next: Map<string, Endpoint> | null = null;
        for (const e of incoming) {
          const old = (next ?? this.byKeyMap).get(e.key);
          if (old !== undefined && sameEndpoint(old, e)) continue;
          next ??= new Map(this.byKeyMap);
          next.set(e.key, e);
        }
        return next === null ? this : this.next(next);
      }
      case 'remove': {
        let next: Map<string, Endpoint> | null = null;
        for (const k of update.keys) {
          if (!(next ?? this.byKeyMap).has(k)) continue;
          next ??= new Map(this.byKeyMap);
          next.delete(k);
        }
        return next === null ? this : this.next(next);
      }
      default: {
        const never: never = update;
        throw new SkeinError('SKEIN_E_VALIDATION', `unknown endpoint update type "${String((never as { type: unknown }).type)}"`, { field: 'type' });
      }
    }
  }

  private next(map: Map<string, Endpoint>): EndpointSet {
    const sorted = Object.freeze([...map.values()].sort(byKey));
    return new EndpointSet(map, sorted, this.version + 1);
  }
}
