/**
 * The per-endpoint state of the balancers that draw endpoints at random (random, least-request,
 * peak-ewma), kept so that one endpoint joining, leaving or changing costs O(1) (O(log n) with
 * weights), not a rebuild of every endpoint's state (issue 11 §6).
 *
 * - `eps` and `states` are parallel, dense arrays of the pickable endpoints (weight > 0): what a
 *   draw indexes. After `rebuild` they are in key order; afterwards a newcomer is appended and a
 *   leaver's place is taken by the last one (swap-remove), so the order is arbitrary. Draws are
 *   random, so the order changes nothing but which endpoint a given random number names.
 * - `byKey` holds the state of every endpoint of the set, weight 0 included: a drained endpoint
 *   keeps its in-flight count and latency estimate until it comes back. An endpoint whose address
 *   or port changed under the same key is a new process: it gets fresh state.
 * - `weights`, when given, follows the positions of `eps` for weighted draws.
 */
import type { Endpoint, EndpointChanges } from '../discovery/endpoint.js';
import { sameTarget } from './common.js';
import type { WeightedIndex } from './weighted-index.js';

export interface SlotState {
  /** The endpoint as in the current set (its weight may change across updates). */
  endpoint: Endpoint;
}

export class Slots<S extends SlotState> {
  /** The pickable endpoints (weight > 0). */
  readonly eps: Endpoint[] = [];
  /** The state of `eps[i]`. */
  readonly states: S[] = [];
  /** The state of every endpoint of the set (weight 0 included), by key. */
  readonly byKey = new Map<string, S>();
  /** Key -> index in `eps`. */
  private readonly at = new Map<string, number>();

  constructor(
    private readonly fresh: (e: Endpoint) => S,
    readonly weights: WeightedIndex | null = null,
  ) {}

  /** Every endpoint of the set, in key order: state is kept for those that stay (same target). */
  rebuild(list: readonly Endpoint[]): void {
    const old = new Map(this.byKey);
    this.byKey.clear();
    this.at.clear();
    this.eps.length = 0;
    this.states.length = 0;
    this.weights?.clear();
    for (const e of list) {
      const s = old.get(e.key);
      this.place(e, s !== undefined && sameTarget(s.endpoint, e) ? s : undefined);
    }
  }

  /** What one update changed. */
  follow(changes: EndpointChanges): void {
    for (const e of changes.removed) this.remove(e.key);
    for (const e of changes.upserted) {
      const s = this.byKey.get(e.key);
      this.place(e, s !== undefined && sameTarget(s.endpoint, e) ? s : undefined);
    }
  }

  /** Puts `e` (with `kept` state, or fresh) where it belongs: in `eps` when its weight is > 0. */
  private place(e: Endpoint, kept: S | undefined): void {
    let s = kept;
    if (s === undefined) s = this.fresh(e);
    else s.endpoint = e;
    this.byKey.set(e.key, s);
    const i = this.at.get(e.key);
    if (e.weight <= 0) {
      if (i !== undefined) this.drop(i);
    } else if (i === undefined) {
      this.at.set(e.key, this.eps.length);
      this.eps.push(e);
      this.states.push(s);
      this.weights?.push(e.weight);
    } else {
      this.eps[i] = e;
      this.states[i] = s;
      this.weights?.set(i, e.weight);
    }
  }

  private remove(key: string): void {
    this.byKey.delete(key);
    const i = this.at.get(key);
    if (i !== undefined) this.drop(i);
  }

  /** Removes `eps[i]`: the last one takes its place. */
  private drop(i: number): void {
    const last = this.eps.length - 1;
    this.at.delete(this.eps[i]!.key);
    if (i !== last) {
      const moved = this.eps[last]!;
      this.eps[i] = moved;
      this.states[i] = this.states[last]!;
      this.at.set(moved.key, i);
      this.weights?.set(i, moved.weight);
    }
    this.eps.pop();
    this.states.pop();
    this.weights?.pop();
  }
}
