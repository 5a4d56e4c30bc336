/** Helpers of the balancer tests (not used by the balancers themselves). */
import { EndpointSet, type Endpoint, type EndpointInput } from '../discovery/endpoint.js';
import type { Balancer, PickContext } from './balancer.js';
import type { Rng } from './balancer.js';

/** Endpoints e0..e(n-1) of service svc, weights from the list (default 1). */
export function inputs(n: number, weights: readonly number[] = []): EndpointInput[] {
  return Array.from({ length: n }, (_, i) => ({ service: 'svc', id: `e${i}`, address: `10.0.${i >> 8}.${i & 255}`, port: 8080, weight: weights[i] ?? 1 }));
}

export function setOf(n: number, weights: readonly number[] = []): EndpointSet {
  return EndpointSet.of(inputs(n, weights));
}

/** Counts picks by endpoint id. */
export function countPicks(b: Balancer, picks: number, ctx: (i: number) => PickContext | undefined = () => undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i < picks; i++) {
    const e = b.pick(ctx(i));
    const id = e === null ? 'null' : e.id;
    out.set(id, (out.get(id) ?? 0) + 1);
  }
  return out;
}

/** Shares in percent by id. */
export function shares(counts: Map<string, number>): Map<string, number> {
  let total = 0;
  for (const v of counts.values()) total += v;
  return new Map([...counts].map(([k, v]) => [k, (100 * v) / total]));
}

export function randomKeys(n: number, rng: Rng): string[] {
  return Array.from({ length: n }, () => `user-${Math.floor(rng() * 2 ** 52).toString(36)}`);
}

/** The id each key maps to. */
export function mapping(b: Balancer, keys: readonly string[], available?: (e: Endpoint) => boolean): string[] {
  return keys.map((hash) => b.pick({ hash, available })?.id ?? 'null');
}
