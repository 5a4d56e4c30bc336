/**
 * Round robin: endpoints in turn, ordered by key; weights other than 0 are ignored (use
 * weighted-round-robin for weights). O(1) per pick.
 *
 * - Start: a random position (so proxies started together do not all begin with one endpoint).
 * - Across updates: continues with the first endpoint after the one picked last (by key order),
 *   so frequent updates neither restart the cycle nor favour the first endpoints.
 * - Gate: unavailable endpoints are skipped; the turn passes to the next available one.
 *
 * The endpoints sit on a circular doubly linked list in key order, drained ones (weight 0)
 * included and skipped by picks, so an endpoint joins (after its predecessor by key, found in the
 * set's tree in O(log n)) or leaves in O(1) + O(log n), without redoing the list (issue 11 §6).
 * A pick walks past drained endpoints: O(1) unless many are drained in a row.
 */
import type { Endpoint, EndpointChanges } from '../discovery/endpoint.js';
import { type PickContext, type Rng, optionsSchema, type BalancerRegistration } from './balancer.js';
import { BaseBalancer, NO_CONTEXT, checkRng, randomIndex } from './common.js';

export interface RoundRobinOptions {
  /** Chooses the first position; default Math.random. */
  rng?: Rng;
}

interface Link {
  endpoint: Endpoint;
  prev: Link;
  next: Link;
}

export class RoundRobinBalancer extends BaseBalancer {
  readonly kind = 'round-robin' as const;
  private readonly rng: Rng;
  private readonly links = new Map<string, Link>();
  /** The endpoint picked last (or the one before the next due): picks go on from its `next`. */
  private last: Link | null = null;
  /** The largest key: the smallest one's predecessor in the circle. */
  private tail: Link | null = null;

  constructor(opts: RoundRobinOptions = {}) {
    super();
    this.rng = checkRng(this.kind, opts.rng);
  }

  protected rebuild(): void {
    const list = this.set.list();
    // Go on after the last key picked (any endpoint with a key at or below it, or the last one).
    const lastKey = this.last?.endpoint.key ?? null;
    this.links.clear();
    this.last = this.tail = null;
    let first: Link | null = null;
    let prev: Link | null = null;
    let after: Link | null = null;
    for (const e of list) {
      const l = this.link(e, prev);
      first ??= l;
      prev = l;
      if (lastKey !== null && e.key <= lastKey) after = l;
    }
    if (first === null || prev === null) return;
    first.prev = prev;
    prev.next = first;
    this.tail = prev;
    this.last = lastKey === null ? this.randomStart(first) : (after ?? prev);
  }

  protected follow(changes: EndpointChanges): void {
    const wasEmpty = this.links.size === 0;
    for (const e of changes.removed) this.unlink(e.key);
    // In key order, so a newcomer's predecessor is either linked already or one of these.
    const up = changes.upserted.length > 1 ? [...changes.upserted].sort((a, b) => (a.key < b.key ? -1 : 1)) : changes.upserted;
    for (const e of up) {
      const l = this.links.get(e.key);
      if (l !== undefined) {
        l.endpoint = e;
        continue;
      }
      // After its predecessor by key; the smallest key goes after the largest (the circle closes).
      const before = this.set.before(e.key);
      const pred = before === undefined ? this.tail : this.links.get(before.key)!;
      const n = { endpoint: e } as Link;
      this.links.set(e.key, n);
      if (pred === null) {
        n.prev = n.next = n;
        this.tail = n;
      } else {
        n.prev = pred;
        n.next = pred.next;
        pred.next.prev = n;
        pred.next = n;
        if (pred === this.tail && before !== undefined) this.tail = n;
      }
      this.last ??= n;
    }
    if (wasEmpty && this.last !== null) this.last = this.randomStart(this.last);
  }

  pick(ctx: PickContext = NO_CONTEXT): Endpoint | null {
    const last = this.last;
    if (last === null || this.size === 0) return null;
    const gate = ctx.available;
    let l = last.next;
    for (let tries = this.links.size; tries > 0; tries--, l = l.next) {
      const e = l.endpoint;
      if (e.weight <= 0 || (gate !== undefined && !gate(e))) continue;
      this.last = l;
      return e;
    }
    return null;
  }

  /** A new link after `prev` (not closed into a circle). */
  private link(e: Endpoint, prev: Link | null): Link {
    const l = { endpoint: e } as Link;
    if (prev !== null) {
      prev.next = l;
      l.prev = prev;
    }
    this.links.set(e.key, l);
    return l;
  }

  private unlink(key: string): void {
    const l = this.links.get(key);
    if (l === undefined) return;
    this.links.delete(key);
    if (this.links.size === 0) {
      this.last = this.tail = null;
      return;
    }
    if (this.last === l) this.last = l.prev;
    if (this.tail === l) this.tail = l.prev;
    l.prev.next = l.next;
    l.next.prev = l.prev;
  }

  /** The link before a random one: the first pick lands anywhere in the circle. */
  private randomStart(from: Link): Link {
    let l = from;
    for (let i = randomIndex(this.rng, this.links.size); i > 0; i--) l = l.next;
    return l.prev;
  }
}

/** The round-robin balancer, as createBalancer (index.ts) finds it. */
export const roundRobinBalancer: BalancerRegistration<'round-robin', Omit<RoundRobinOptions, 'clock' | 'rng'>> = {
  kind: 'round-robin',
  schema: optionsSchema('round-robin'),
  factory: (_options, deps) => new RoundRobinBalancer({ rng: deps.rng }),
};
