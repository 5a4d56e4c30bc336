/**
 * Fixtures for the signals' unit tests (windows, scraper, routes): a proxy's `/stats` series with
 * defaults. Not used by the control plane itself.
 */
import type { StatsSeries } from '../../api/stats.js';
import { LATENCY_BUCKETS } from '../../api/stats.js';

/** The latency bounds a proxy reports (seconds). */
export const BOUNDS: readonly number[] = LATENCY_BUCKETS;

export type SeriesIn = Partial<StatsSeries> & { requests: number };

/**
 * One inbound series of products-1 (called by frontend) with `s` over it; without `s.latency`,
 * every request is in latency bucket `bucket` (2: 1 to 2.5 ms; 4: 5 to 10 ms).
 */
export function statsSeries(s: SeriesIn, bucket = 2): StatsSeries {
  const counts = s.latency?.counts ?? Array.from({ length: BOUNDS.length + 1 }, (_, i) => (i === bucket ? s.requests : 0));
  return {
    direction: 'inbound',
    workload: 'products-1',
    source: 'frontend',
    service: 'products',
    route: 'default',
    instance: 'products-1',
    failures: 0,
    requestBytes: 0,
    responseBytes: 0,
    ...s,
    latency: { counts, sum: s.latency?.sum ?? 0 },
  };
}
