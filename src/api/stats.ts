/**
 * The proxy's counters as JSON: what `GET /stats` on a proxy's admin server answers and what the
 * control plane scrapes for its golden signals (docs/proxy.md, docs/api.md#golden-signals).
 * Counters are totals since the proxy started; the control plane takes differences.
 */

/** Which listener of a proxy saw a request: outbound (from its app) or inbound (to its app). */
export type Direction = 'inbound' | 'outbound';

/**
 * Upper bounds of the proxy's request latency buckets, in seconds: what every `StatsSnapshot`
 * carries as `bounds` (and the buckets of the proxy's Prometheus histogram). The control plane
 * keeps the bounds of the first snapshot it sees and maps other proxies' buckets onto them, so
 * a mesh whose proxies disagree loses precision: change them here only.
 */
export const LATENCY_BUCKETS: readonly number[] = Object.freeze([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);

/** One listener's requests of one source, destination service, route and instance. */
export interface StatsSeries {
  readonly direction: Direction;
  /** The proxy's workload whose listener saw the requests. */
  readonly workload: string;
  readonly source: string;
  readonly service: string;
  readonly route: string;
  readonly instance: string;
  /** The version of the destination instance (its registry `version`, "" when none). Absent from proxies older than this field: read as "". */
  readonly version?: string;
  readonly requests: number;
  readonly failures: number;
  /** Responses by status ("0": no response). */
  readonly statuses?: Readonly<Record<string, number>>;
  /** Per bucket, not cumulative: one count per bound of `StatsSnapshot.bounds`, then +Inf. Seconds. */
  readonly latency: { readonly counts: readonly number[]; readonly sum: number };
  readonly requestBytes: number;
  readonly responseBytes: number;
  /**
   * Of `requests`, those whose hop between proxies was mTLS (inbound: the caller's connection;
   * outbound: the attempt's connection to the peer's inbound listener). Absent from proxies older
   * than this field: read as 0.
   */
  readonly mtls?: number;
}

/**
 * What an inbound listener's authorization decided (src/authz): allowed, denied, a dry-run policy
 * would have denied (the request went on), an AUDIT policy matched. One request can count under
 * several: `allow` and `dry-run-deny`, or `deny` and `audit`.
 */
export const AUTHZ_OUTCOMES = ['allow', 'deny', 'dry-run-deny', 'audit'] as const;
export type AuthzOutcome = (typeof AUTHZ_OUTCOMES)[number];

/** Authorization decisions of one service, outcome and policy, since the proxy started. */
export interface StatsAuthz {
  readonly service: string;
  readonly outcome: AuthzOutcome;
  /** The policy that decided or matched; "" for the default (no policy matched). */
  readonly policy: string;
  readonly count: number;
}

/** Something the proxy saw happen to an endpoint: eject, return, breaker, active-check. */
/** What makes a series one series (its labels): the key a scraper and a proxy's workers sum and diff by. */
export function statsSeriesKey(s: StatsSeries): string {
  return [s.direction, s.workload, s.source, s.service, s.route, s.instance, s.version ?? ''].join('\u0000');
}

/** What makes authorization counts one count: service, outcome and policy. */
export function statsAuthzKey(a: StatsAuthz): string {
  return [a.service, a.outcome, a.policy].join('\u0000');
}

export interface StatsEvent {
  readonly seq: number;
  readonly time: number;
  readonly type: string;
  readonly service: string;
  /** The endpoint's instance id, "" when the proxy knows none. */
  readonly instance: string;
  readonly detail: string;
}

export interface StatsSnapshot {
  readonly proxy: { readonly id: string; readonly startedAt: number };
  readonly at: number;
  /** Upper bounds of the latency buckets in seconds; counts have one more entry (+Inf). */
  readonly bounds: readonly number[];
  readonly series: readonly StatsSeries[];
  /** Services with policies or a deny default only; absent from proxies older than this field. */
  readonly authz?: readonly StatsAuthz[];
  /** Events after `?since=`, oldest first; at most the proxy's last STATS_MAX_EVENTS. */
  readonly events: readonly StatsEvent[];
  readonly eventSeq: number;
}

/** Traffic events a proxy keeps for the control plane to collect (`/stats?since=`). */
export const STATS_MAX_EVENTS = 1000;

/**
 * The query of `GET /stats` (a proxy's admin server, the SDK's metrics endpoint): `since`, the
 * sequence number of the last event the caller has (default 0); or what is wrong with it, and
 * the parameter (answered 400 SKEIN_E_BAD_QUERY).
 */
export function parseStatsQuery(params: URLSearchParams): { readonly since: number } | { readonly error: string; readonly field?: string } {
  for (const k of params.keys()) if (k !== 'since') return { error: `unknown query parameter "${k}" (allowed: since)` };
  const since = params.get('since') ?? '0';
  if (!/^\d{1,15}$/.test(since)) return { error: `since must be an event sequence number (a whole number), got "${since.slice(0, 40)}"`, field: 'since' };
  return { since: Number(since) };
}
