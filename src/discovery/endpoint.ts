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
 * A snapshot is a persistent tree (a treap by key), so adding or removing one endpoint of n costs
 * O(log n) and the next snapshot shares everything else with the last; and it remembers what
 * changed from the one it was made from (`changesSince`), so what follows a service (balancers,
 * traffic state, active checks) applies one change in O(1) or O(log n), not O(n) (issue 11 §6:
 * a proxy fell to ~100 changes/s at 25,000 instances when every change rebuilt everything).
 */
import { INSTANCE_DEFAULTS } from '../api/types.js';
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
  const weight = input.weight ?? INSTANCE_DEFAULTS.weight;
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

// ---------------------------------------------------------------------------------------------
// The persistent tree behind EndpointSet
// ---------------------------------------------------------------------------------------------

/**
 * A node of a treap ordered by key: a binary search tree by key and a max-heap by `prio`, a hash
 * of the key, so its shape depends only on the keys it holds (expected depth ~2 ln n, whatever
 * the order of changes). Nodes are never changed once a set holds them: an insert or a removal
 * copies the O(log n) nodes on its path and shares the rest with the set it came from.
 */
interface Node {
  readonly e: Endpoint;
  readonly prio: number;
  left: Node | null;
  right: Node | null;
}

/** FNV-1a then murmur3's finalizer: a well-mixed 32-bit priority from the key. */
function priority(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

const node = (e: Endpoint, prio: number, left: Node | null, right: Node | null): Node => ({ e, prio, left, right });

/** The tree with `e` in it (replacing the endpoint of the same key). */
function insert(t: Node | null, e: Endpoint, prio: number): Node {
  if (t === null) return node(e, prio, null, null);
  const k = e.key;
  const tk = t.e.key;
  if (k === tk) return node(e, t.prio, t.left, t.right);
  if (k < tk) {
    const l = insert(t.left, e, prio);
    // Rotate right when the new child outranks its parent.
    return l.prio > t.prio ? node(l.e, l.prio, l.left, node(t.e, t.prio, l.right, t.right)) : node(t.e, t.prio, l, t.right);
  }
  const r = insert(t.right, e, prio);
  return r.prio > t.prio ? node(r.e, r.prio, node(t.e, t.prio, t.left, r.left), r.right) : node(t.e, t.prio, t.left, r);
}

/** Joins two trees, every key of `a` below every key of `b`. */
function join(a: Node | null, b: Node | null): Node | null {
  if (a === null) return b;
  if (b === null) return a;
  return a.prio > b.prio ? node(a.e, a.prio, a.left, join(a.right, b)) : node(b.e, b.prio, join(a, b.left), b.right);
}

/** The tree without `key` (which it holds). */
function remove(t: Node, key: string): Node | null {
  const tk = t.e.key;
  if (key === tk) return join(t.left, t.right);
  if (key < tk) return node(t.e, t.prio, t.left === null ? null : remove(t.left, key), t.right);
  return node(t.e, t.prio, t.left, t.right === null ? null : remove(t.right, key));
}

function find(t: Node | null, key: string): Endpoint | undefined {
  while (t !== null) {
    const tk = t.e.key;
    if (key === tk) return t.e;
    t = key < tk ? t.left : t.right;
  }
  return undefined;
}

/** The endpoint with the greatest key below `key`. */
function below(t: Node | null, key: string): Endpoint | undefined {
  let found: Endpoint | undefined;
  while (t !== null) {
    if (t.e.key < key) {
      found = t.e;
      t = t.right;
    } else t = t.left;
  }
  return found;
}

/** A treap of endpoints already sorted by key (distinct keys), in O(n): a Cartesian tree by priority. */
function build(sorted: readonly Endpoint[]): Node | null {
  const spine: Node[] = [];
  for (const e of sorted) {
    const n = node(e, priority(e.key), null, null);
    let last: Node | null = null;
    while (spine.length > 0 && spine[spine.length - 1]!.prio < n.prio) last = spine.pop()!;
    n.left = last;
    if (spine.length > 0) spine[spine.length - 1]!.right = n;
    spine.push(n);
  }
  return spine[0] ?? null;
}

function inOrder(t: Node | null, out: Endpoint[]): void {
  // Iterative: a degenerate tree must not overflow the stack.
  const stack: Node[] = [];
  while (t !== null || stack.length > 0) {
    while (t !== null) {
      stack.push(t);
      t = t.left;
    }
    const n = stack.pop()!;
    out.push(n.e);
    t = n.right;
  }
}

/** Orders keys by UTF-16 code units (not by locale): the same order on every machine. */
function byKey(a: Endpoint, b: Endpoint): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// EndpointSet
// ---------------------------------------------------------------------------------------------

/**
 * What one `apply` changed: the endpoints that joined or were replaced (their new version; the
 * old one, if any, is in the set it was applied to) and the endpoints that left (as they were).
 * A key is in at most one of the two lists.
 */
export interface EndpointChanges {
  readonly upserted: readonly Endpoint[];
  readonly removed: readonly Endpoint[];
}

const NO_CHANGES: EndpointChanges = Object.freeze({ upserted: Object.freeze([]), removed: Object.freeze([]) });

/** Distinguishes sets across lineages (`version` counts within one). */
let nextSetId = 1;

/** An immutable snapshot of a service's endpoints. */
export class EndpointSet {
  private static readonly EMPTY = new EndpointSet(null, 0, 0, 0, 0, NO_CHANGES);

  /** Unique in the process: what `changesSince` recognises its predecessor by. */
  private readonly id = nextSetId++;
  /** `list()`, made on first use (the only O(n) read). */
  private readonly cache: { list: readonly Endpoint[] | null } = { list: null };

  private constructor(
    private readonly root: Node | null,
    readonly size: number,
    /** Endpoints with weight > 0 (what the balancers may pick). */
    readonly pickable: number,
    /** 0 for the empty set; every `apply` that changes something adds 1. */
    readonly version: number,
    /** The id of the set this one was applied to (0: none). */
    private readonly from: number,
    private readonly changes: EndpointChanges,
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

  /**
   * All endpoints, ordered by key. The array is frozen and shared: do not copy it per request.
   * Made in O(n) on the first call for this snapshot: code that follows changes should use
   * `changesSince` instead of comparing lists.
   */
  list(): readonly Endpoint[] {
    let l = this.cache.list;
    if (l === null) {
      const out: Endpoint[] = [];
      inOrder(this.root, out);
      l = this.cache.list = Object.freeze(out);
    }
    return l;
  }

  /** O(log n). */
  get(key: string): Endpoint | undefined {
    return find(this.root, key);
  }

  has(key: string): boolean {
    return find(this.root, key) !== undefined;
  }

  /** The endpoint with the greatest key below `key` (which need not be in the set), O(log n). */
  before(key: string): Endpoint | undefined {
    return below(this.root, key);
  }

  /**
   * What changed from `prev` to this set, when this set is `prev.apply(...)` (nothing when it is
   * `prev` itself); null otherwise (another lineage, or more than one step apart): then the
   * caller compares the whole sets. This is how the balancers, the traffic state and the active
   * checker follow a service in O(changes) rather than O(endpoints) per update.
   */
  changesSince(prev: EndpointSet): EndpointChanges | null {
    if (prev === this) return NO_CHANGES;
    return this.from === prev.id ? this.changes : null;
  }

  /**
   * The snapshot after `update`:
   * - reset: exactly the given endpoints;
   * - add: the given endpoints added, each replacing the one with the same key;
   * - remove: the endpoints with these keys removed (unknown keys are ignored).
   * Within one update, the last endpoint given for a key wins. Invalid endpoints throw
   * SkeinError(SKEIN_E_VALIDATION) and leave nothing changed. Returns `this` (same version) when
   * the update changes nothing, otherwise a new set with `version + 1`. Cost: O(k log n) for an
   * add or remove of k endpoints (the new set shares all but O(k log n) nodes with this one),
   * O(n log n) for a reset.
   */
  apply(update: Update): EndpointSet {
    switch (update.type) {
      case 'reset':
        return this.reset(update.endpoints.map(makeEndpoint));
      case 'add':
        return this.add(update.endpoints.map(makeEndpoint));
      case 'remove':
        return this.remove(update.keys);
      default: {
        const never: never = update;
        throw new SkeinError('SKEIN_E_VALIDATION', `unknown endpoint update type "${String((never as { type: unknown }).type)}"`, { field: 'type' });
      }
    }
  }

  private reset(incoming: Endpoint[]): EndpointSet {
    const last = new Map<string, Endpoint>();
    for (const e of incoming) last.set(e.key, e);
    const sorted = [...last.values()].sort(byKey);
    // Walk the old and the new list side by side: what left, what joined or changed.
    const old = this.list();
    const upserted: Endpoint[] = [];
    const removed: Endpoint[] = [];
    let i = 0;
    for (const e of sorted) {
      while (i < old.length && old[i]!.key < e.key) removed.push(old[i++]!);
      if (i < old.length && old[i]!.key === e.key) {
        if (!sameEndpoint(old[i]!, e)) upserted.push(e);
        i++;
      } else upserted.push(e);
    }
    while (i < old.length) removed.push(old[i++]!);
    if (upserted.length === 0 && removed.length === 0) return this;
    let pickable = 0;
    for (const e of sorted) if (e.weight > 0) pickable++;
    const next = new EndpointSet(build(sorted), sorted.length, pickable, this.version + 1, this.id, Object.freeze({ upserted: Object.freeze(upserted), removed: Object.freeze(removed) }));
    next.cache.list = Object.freeze(sorted);
    return next;
  }

  private add(incoming: Endpoint[]): EndpointSet {
    // The last endpoint given for a key wins.
    const todo = incoming.length > 1 ? [...new Map(incoming.map((e) => [e.key, e])).values()] : incoming;
    let root = this.root;
    let size = this.size;
    let pickable = this.pickable;
    const upserted: Endpoint[] = [];
    for (const e of todo) {
      const old = find(root, e.key);
      if (old !== undefined && sameEndpoint(old, e)) continue;
      if (old === undefined) size++;
      pickable += (e.weight > 0 ? 1 : 0) - (old !== undefined && old.weight > 0 ? 1 : 0);
      root = insert(root, e, old === undefined ? priority(e.key) : 0);
      upserted.push(e);
    }
    if (upserted.length === 0) return this;
    return new EndpointSet(root, size, pickable, this.version + 1, this.id, Object.freeze({ upserted: Object.freeze(upserted), removed: NO_CHANGES.removed }));
  }

  private remove(keys: readonly string[]): EndpointSet {
    let root = this.root;
    let pickable = this.pickable;
    const removed: Endpoint[] = [];
    for (const k of keys) {
      const old = find(root, k);
      if (old === undefined) continue;
      root = remove(root as Node, k);
      if (old.weight > 0) pickable--;
      removed.push(old);
    }
    if (removed.length === 0) return this;
    return new EndpointSet(root, this.size - removed.length, pickable, this.version + 1, this.id, Object.freeze({ upserted: NO_CHANGES.upserted, removed: Object.freeze(removed) }));
  }
}
