/**
 * The golden signals as the control plane's API answers them (docs/api.md#golden-signals): one
 * definition for the server (src/control/signals), the CLI (skein stat, top) and the dashboard.
 * Types, constants and small functions, no imports but types (erased): the dashboard's bundle
 * reads this file too.
 */
import type { AuthzOutcome } from './stats.js';

export type { AuthzOutcome } from './stats.js';

/** The windows kept; `?window=` takes one of them (default 1m). */
export const WINDOWS = ['10s', '1m', '5m', '15m'] as const;
export type SignalWindow = (typeof WINDOWS)[number];

export interface Latency {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

/** The numbers of one thing over one window. */
export interface WireSignals {
  /** Requests per second over the window. */
  rps: number;
  /** 0..1; null when there were no requests. */
  successRate: number | null;
  /** Milliseconds, interpolated within histogram buckets; null when there were no requests. */
  latencyMs: Latency;
  requests: number;
  failures: number;
}

export interface WireInstance extends WireSignals {
  id: string;
  /** The registry's status; "unknown" for an instance seen only in traffic. */
  status: string;
  address: string | null;
}

/** One policy's decisions of one outcome over the window ("" names the default: no policy matched). */
export interface WireAuthzPolicy {
  policy: string;
  outcome: AuthzOutcome;
  requests: number;
}

/**
 * A service's authorization decisions over the window, as its inbound proxies counted them
 * (services with policies or a deny default only; zeros otherwise). A request can count twice:
 * allowed and dry-run denied, or denied and audited.
 */
export interface WireAuthz {
  allowed: number;
  denied: number;
  /** A dry-run policy would have denied (the request went on). */
  dryRunDenied: number;
  /** An AUDIT policy matched. */
  audited: number;
  /** By policy and outcome: outcomes in the order allow, deny, dry-run-deny, audit, then by policy. */
  byPolicy: WireAuthzPolicy[];
}

/** A service's decisions when none were counted. */
export function noAuthzDecisions(): WireAuthz {
  return { allowed: 0, denied: 0, dryRunDenied: 0, audited: 0, byPolicy: [] };
}

export interface WireService extends WireSignals {
  service: string;
  instances: WireInstance[];
  /** Absent from control planes older than this field. */
  authz?: WireAuthz;
}

/** Healthy and registered instances of a service; those seen only in traffic ("unknown": gone since) are not counted. */
export function healthyCount(s: WireService): { healthy: number; total: number } {
  const registered = s.instances.filter((i) => i.status !== 'unknown');
  return { healthy: registered.filter((i) => i.status === 'healthy').length, total: registered.length };
}

/** How many of an edge's requests went over mTLS between the proxies. */
export type MtlsShare = 'all' | 'some' | 'none';

/** The share of `requests` that `mtls` (of them) is; null without requests (nothing to tell). */
export function mtlsShare(mtls: number, requests: number): MtlsShare | null {
  if (requests <= 0) return null;
  return mtls >= requests ? 'all' : mtls > 0 ? 'some' : 'none';
}

/** Caller -> callee, as the callers' proxies saw it. */
export interface WireEdge extends WireSignals {
  source: string;
  destination: string;
  /**
   * Whether the hop between the proxies was mTLS, over the window's requests; null: no requests.
   * This and `mtlsRequests` are absent from control planes older than them.
   */
  mtls?: MtlsShare | null;
  /** Of `requests`, those over mTLS. */
  mtlsRequests?: number;
}

export interface WireRoute extends WireSignals {
  service: string;
  route: string;
  direction: string;
}

/** GET /v1/signals. */
export interface MeshSignalsBody {
  window: SignalWindow;
  time: string;
  scrapeIntervalMs: number;
  services: WireService[];
  edges: WireEdge[];
  routes: WireRoute[];
}

/** The `signals` event of GET /v1/signals/stream: the 10s window and the mesh's totals. */
export interface StreamSignalsBody extends MeshSignalsBody {
  mesh: { rps: number; successRate: number | null };
}

/** One point of GET /v1/signals/series: one scrape interval. */
export interface SeriesPoint {
  /** The time of the scrape round that filled the slot (ms since the epoch). */
  time: number;
  rps: number;
  successRate: number | null;
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

/** GET /v1/signals/series. */
export interface SeriesBody {
  service: string | null;
  window: SignalWindow;
  stepMs: number;
  points: SeriesPoint[];
}
