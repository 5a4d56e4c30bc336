/**
 * The per-request metrics of a data plane (the proxy's listeners, the SDK's dispatcher): one
 * `SeriesStats` per (listener, source, service, route, instance, version), the Prometheus families
 * read from them (`skein_proxy_requests_total`, `..._request_duration_seconds` with LATENCY_BUCKETS,
 * request and response bytes, mTLS requests) and the engine's counters (retries, the budget, rate
 * limits, errors, connects, ejections, breakers, panic). One definition for both planes, so that a
 * dashboard, `skein stat` and the golden signals read SDK callers as they read proxies; the SDK's
 * request families carry one more label, `plane="sdk"` (the proxy's have none: `plane` null).
 *
 * Cardinality is bounded: no paths, no request ids; route names come from configuration,
 * services, instances and versions from the registry, and the sources one listener keeps apart
 * are capped (`MAX_SOURCES`, the rest are "other").
 */
import { RETRY_CONDITIONS } from '../api/traffic/conditions.js';
import { LATENCY_BUCKETS, STATS_MAX_EVENTS, type Direction, type StatsEvent, type StatsSnapshot } from '../api/stats.js';
import type { ErrorCode } from '../core/errors.js';
import { panicDetail, type TrafficEvent } from '../resilience/traffic-state.js';
import { MIRROR_DROP_REASONS, type MirrorDropReason } from '../engine/mirror.js';
import type { Counter, Histogram, Registry, Sample } from './prom.js';

/** Distinct callers one listener keeps apart; later ones are counted as "other". */
export const MAX_SOURCES = 100;
/** Series one listener keeps apart; past it, new instances are counted as "other". */
export const MAX_SERIES = 5000;
const SOURCE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** The requests of one series: one listener, source, destination service, route, instance and version. */
export class SeriesStats {
  /** Responses by status, of the success class and of the failure class. */
  readonly ok = new Map<number, number>();
  readonly failed = new Map<number, number>();
  /** Per bucket (not cumulative); the last is +Inf. */
  readonly buckets = new Float64Array(LATENCY_BUCKETS.length + 1);
  sum = 0;
  count = 0;
  failures = 0;
  requestBytes = 0;
  responseBytes = 0;
  /** Requests whose hop between proxies was mTLS. */
  mtls = 0;

  constructor(readonly labels: Readonly<{ direction: Direction; workload: string; source: string; service: string; route: string; instance: string; version: string }>) {}

  record(status: number, failed: boolean, seconds: number, requestBytes: number, responseBytes: number, mtls: boolean): void {
    const m = failed ? this.failed : this.ok;
    m.set(status, (m.get(status) ?? 0) + 1);
    if (failed) this.failures++;
    if (mtls) this.mtls++;
    this.sum += seconds;
    this.count++;
    this.requestBytes += requestBytes;
    this.responseBytes += responseBytes;
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++;
    this.buckets[i]!++;
  }

  /** Adds another series' counts to this one. */
  add(o: SeriesStats): void {
    for (const [m, from] of [[this.ok, o.ok], [this.failed, o.failed]] as const) for (const [status, n] of from) m.set(status, (m.get(status) ?? 0) + n);
    for (let i = 0; i < this.buckets.length; i++) this.buckets[i]! += o.buckets[i]!;
    this.sum += o.sum;
    this.count += o.count;
    this.failures += o.failures;
    this.requestBytes += o.requestBytes;
    this.responseBytes += o.responseBytes;
    this.mtls += o.mtls;
  }
}

/** The series of one listener (workload and direction). */
export class ListenerStats {
  private readonly byKey = new Map<string, SeriesStats>();
  private readonly sources = new Set<string>();

  constructor(
    private readonly all: SeriesStats[],
    readonly workload: string,
    readonly direction: Direction,
  ) {}

  /** The series of the last request, and what it was found by (the same strings, usually). */
  private last: SeriesStats | null = null;
  private lastSource: string | null = null;
  private lastService: string | null = null;
  private lastRoute: string | null = null;
  private lastInstance: string | null = null;
  private lastVersion: string | null = null;

  record(
    source: string | null,
    service: string | null,
    route: string | null,
    instance: string | null,
    status: number,
    failed: boolean,
    seconds: number,
    requestBytes: number,
    responseBytes: number,
    mtls = false,
    version: string | null = null,
  ): void {
    if (this.last !== null && this.lastSource === source && this.lastService === service && this.lastRoute === route && this.lastInstance === instance && this.lastVersion === version) {
      this.last.record(status, failed, seconds, requestBytes, responseBytes, mtls);
      return;
    }
    const src = source === null ? 'unknown' : this.source(source);
    let inst = instance ?? '';
    const ver = version ?? '';
    let key = `${src}\u0000${service ?? ''}\u0000${route ?? ''}\u0000${inst}\u0000${ver}`;
    let s = this.byKey.get(key);
    if (s === undefined && this.byKey.size >= MAX_SERIES && instance !== null) {
      // Instances churn with deployments: past the cap, new ones share one series per route and version.
      inst = 'other';
      key = `${src}\u0000${service ?? ''}\u0000${route ?? ''}\u0000other\u0000${ver}`;
      s = this.byKey.get(key);
    }
    if (s === undefined) {
      s = new SeriesStats({ direction: this.direction, workload: this.workload, source: src, service: service ?? '', route: route ?? '', instance: inst, version: ver });
      this.byKey.set(key, s);
      this.all.push(s);
    }
    s.record(status, failed, seconds, requestBytes, responseBytes, mtls);
    this.last = s;
    this.lastSource = source;
    this.lastService = service;
    this.lastRoute = route;
    this.lastInstance = instance;
    this.lastVersion = version;
  }

  /** A caller's name as a label value: a service name, at most MAX_SOURCES of them. */
  private source(name: string): string {
    if (this.sources.has(name)) return name;
    if (!SOURCE.test(name)) return 'unknown';
    if (this.sources.size >= MAX_SOURCES) return 'other';
    this.sources.add(name);
    return name;
  }
}

/**
 * The series as Prometheus sees them: summed over `instance`. Destination instance ids churn with
 * every deployment and would multiply the series of every caller; only /stats (for the control
 * plane's per-instance golden signals) keeps them apart.
 */
export function exposed(series: readonly SeriesStats[]): SeriesStats[] {
  const byKey = new Map<string, SeriesStats>();
  for (const s of series) {
    const l = s.labels;
    const key = `${l.direction}\u0000${l.workload}\u0000${l.source}\u0000${l.service}\u0000${l.route}\u0000${l.version}`;
    let a = byKey.get(key);
    if (a === undefined) byKey.set(key, (a = new SeriesStats({ ...l, instance: '' })));
    a.add(s);
  }
  return [...byKey.values()];
}

/** The labels of an exposed series, all but `instance`, in this order. */
export const SERIES_LABELS = ['direction', 'workload', 'source', 'service', 'route', 'version'] as const;

/**
 * The label values of an exposed series (SERIES_LABELS). `version` (per-version golden signals)
 * only when there is one: to Prometheus an empty label is no label, and most series have none.
 */
export function promLabels(s: SeriesStats): (string | null)[] {
  const l = s.labels;
  return [l.direction, l.workload, l.source, l.service, l.route, l.version === '' ? null : l.version];
}

type SeriesLabel = (typeof SERIES_LABELS)[number] | 'plane';

/**
 * Registers the per-request families of `series` in `r`. `plane`: the value of a `plane` label on
 * every sample (the SDK's "sdk"), or null for none (the proxy's).
 */
export function requestFamilies(r: Registry, series: readonly SeriesStats[], plane: string | null): void {
  // One scrape reads the four per-request metrics one after the other: summed once for all four.
  // (Every request adds to some series' count, so the same number of series and requests means
  // nothing changed.)
  let memo: { series: number; requests: number; list: SeriesStats[] } | null = null;
  const exposedNow = () => {
    let requests = 0;
    for (const s of series) requests += s.count;
    if (memo === null || memo.series !== series.length || memo.requests !== requests) memo = { series: series.length, requests, list: exposed(series) };
    return memo.list;
  };
  const labelsOf = (s: SeriesStats) => (plane === null ? promLabels(s) : [...promLabels(s), plane]);
  const perSeries = (read: (s: SeriesStats) => number) => () => exposedNow().map((s): Sample => ({ labels: labelsOf(s), value: read(s) }));
  const labelNames: readonly SeriesLabel[] = plane === null ? SERIES_LABELS : [...SERIES_LABELS, 'plane'];
  r.scraped<SeriesLabel | 'status' | 'class'>(
    'counter',
    {
      name: 'skein_proxy_requests_total',
      help: 'Requests the proxy finished, by listener, source and destination service, route, version of the endpoint that answered ("" when none), response status (0: no response) and class (failure: no response, 5xx, or an answer the proxy made itself).',
      labelNames: [...labelNames, 'status', 'class'],
    },
    () =>
      exposedNow().flatMap((s) => {
        const out: Sample[] = [];
        const labels = labelsOf(s);
        for (const [m, cls] of [[s.ok, 'success'], [s.failed, 'failure']] as const) {
          for (const [status, n] of [...m].sort((a, b) => a[0] - b[0])) out.push({ labels: [...labels, String(status), cls], value: n });
        }
        return out;
      }),
  );
  r.scraped(
    'histogram',
    { name: 'skein_proxy_request_duration_seconds', help: 'Time from the complete request head to the end of the response (all attempts and backoff included), by listener, source, destination service, route and version.', labelNames, buckets: LATENCY_BUCKETS },
    () => exposedNow().map((s): Sample => ({ labels: labelsOf(s), value: s.sum, counts: s.buckets })),
  );
  r.scraped('counter', { name: 'skein_proxy_request_bytes_total', help: 'Request body bytes received from clients (as framed on the wire), by the labels of skein_proxy_request_duration_seconds.', labelNames }, perSeries((s) => s.requestBytes));
  r.scraped('counter', { name: 'skein_proxy_response_bytes_total', help: "Response body bytes forwarded to clients (as framed on the wire; the proxy's own error answers not counted), by the labels of skein_proxy_request_duration_seconds.", labelNames }, perSeries((s) => s.responseBytes));
  r.scraped(
    'counter',
    { name: 'skein_proxy_mtls_requests_total', help: "Requests the proxy finished whose hop between proxies was mTLS (inbound: the caller's connection; outbound: the connection to the peer's inbound listener), by the labels of skein_proxy_request_duration_seconds: divided by its _count, the share that was mTLS.", labelNames },
    perSeries((s) => s.mtls),
  );
}

/** The engine's counters, by the name of the field that holds them (ProxyMetrics, SdkMetrics). */
export const ENGINE_COUNTERS = {
  rateLimits: { name: 'skein_proxy_rate_limited_total', help: 'Requests refused with 429 by a rate limit, by listener direction, destination service and route.', labelNames: ['direction', 'service', 'route'] as const },
  errors: { name: 'skein_proxy_errors_total', help: 'Responses the proxy made itself (x-skein-error), by code.', labelNames: ['direction', 'code'] as const },
  connects: { name: 'skein_proxy_upstream_connects_total', help: 'New upstream connections, by result (ok, failed).', labelNames: ['result'] as const },
  retries: { name: 'skein_proxy_retries_total', help: `Retries sent, by destination service and reason (${[...RETRY_CONDITIONS, 'status'].join(', ')}).`, labelNames: ['service', 'reason'] as const },
  budgetExhausted: { name: 'skein_proxy_retry_budget_exhausted_total', help: 'Retries the retry budget refused, by destination service.', labelNames: ['service'] as const },
  outlierEvents: { name: 'skein_proxy_outlier_events_total', help: 'Outlier detection ejections and returns of endpoints, by destination service and event (eject, return).', labelNames: ['service', 'event'] as const },
  breakerChanges: { name: 'skein_proxy_breaker_transitions_total', help: 'Circuit breaker state changes of endpoints, by destination service and new state (open, half-open, closed).', labelNames: ['service', 'to'] as const },
  panicChanges: { name: 'skein_proxy_panic_transitions_total', help: 'Destination services entering (to="panic") and leaving (to="normal") panic mode.', labelNames: ['service', 'to'] as const },
  mirrorRequests: {
    name: 'skein_proxy_mirror_requests_total',
    help: "Mirrored copies of requests that were sent, by the primary's service, the mirror service and subset (\"\" for every instance), the copy's response status (0: none: a connect failure, reset or its timeout) and class (failure: no response or 5xx). Kept out of skein_proxy_requests_total and the golden signals.",
    labelNames: ['service', 'mirror', 'subset', 'status', 'class'] as const,
  },
  mirrorDropped: {
    name: 'skein_proxy_mirror_dropped_total',
    help: `Requests a mirror was to copy but did not, by the primary's service, the mirror service and subset, and reason (${MIRROR_DROP_REASONS.join(', ')}).`,
    labelNames: ['service', 'mirror', 'subset', 'reason'] as const,
  },
} as const;

/** The duration histogram of mirrored copies. */
export const MIRROR_DURATION = {
  name: 'skein_proxy_mirror_request_duration_seconds',
  help: "Time from sending a mirrored copy to the end of its response (or its failure), by the primary's service, the mirror service and subset.",
  labelNames: ['service', 'mirror', 'subset'] as const,
  buckets: LATENCY_BUCKETS,
};

/** The series as /stats serves them (src/api/stats.ts), for the control plane's golden signals. */
export function statsSeries(series: readonly SeriesStats[]): StatsSnapshot['series'] {
  return series.map((s) => {
    const statuses: Record<string, number> = {};
    for (const m of [s.ok, s.failed]) for (const [status, n] of m) statuses[status] = (statuses[status] ?? 0) + n;
    return { ...s.labels, requests: s.count, failures: s.failures, statuses, latency: { counts: Array.from(s.buckets), sum: s.sum }, requestBytes: s.requestBytes, responseBytes: s.responseBytes, mtls: s.mtls };
  });
}

/** The events /stats serves (after `since`): numbered in order, the last STATS_MAX_EVENTS kept. */
export class StatsEventFeed {
  private readonly events: StatsEvent[] = [];
  /** The number of the last event. */
  seq = 0;

  add(type: string, service: string, instance: string, detail: string): StatsEvent {
    const e: StatsEvent = { seq: ++this.seq, time: Date.now(), type, service, instance, detail };
    this.events.push(e);
    if (this.events.length > STATS_MAX_EVENTS) this.events.splice(0, this.events.length - STATS_MAX_EVENTS);
    return e;
  }

  since(seq: number): StatsEvent[] {
    return this.events.filter((e) => e.seq > seq);
  }
}

/** The instance id of an endpoint key (`service/instance`). */
export const instanceOf = (endpoint: string): string => {
  const slash = endpoint.indexOf('/');
  return slash < 0 ? endpoint : endpoint.slice(slash + 1);
};

/**
 * What the engine reports (its counters: CallCounters, AdmissionCounters, the drivers' errors and
 * connects) and the traffic events it raises (ejections, returns, breaker and panic changes),
 * counted and added to the /stats feed: the proxy's and the SDK's alike.
 */
export class EngineCounters {
  private readonly errors: Counter<'direction' | 'code'>;
  private readonly connects: Counter<'result'>;
  private readonly retries: Counter<'service' | 'reason'>;
  private readonly budgetExhausted: Counter<'service'>;
  private readonly rateLimits: Counter<'direction' | 'service' | 'route'>;
  private readonly outlierEvents: Counter<'service' | 'event'>;
  private readonly breakerChanges: Counter<'service' | 'to'>;
  private readonly panicChanges: Counter<'service' | 'to'>;
  private readonly mirrorRequests: Counter<'service' | 'mirror' | 'subset' | 'status' | 'class'>;
  private readonly mirrorDurations: Histogram<'service' | 'mirror' | 'subset'>;
  private readonly mirrorDrops: Counter<'service' | 'mirror' | 'subset' | 'reason'>;

  constructor(
    r: Registry,
    /** Where the traffic events go (/stats). */
    protected readonly feed: StatsEventFeed,
  ) {
    this.rateLimits = r.counter(ENGINE_COUNTERS.rateLimits);
    this.errors = r.counter(ENGINE_COUNTERS.errors);
    this.connects = r.counter(ENGINE_COUNTERS.connects);
    this.retries = r.counter(ENGINE_COUNTERS.retries);
    this.budgetExhausted = r.counter(ENGINE_COUNTERS.budgetExhausted);
    this.outlierEvents = r.counter(ENGINE_COUNTERS.outlierEvents);
    this.breakerChanges = r.counter(ENGINE_COUNTERS.breakerChanges);
    this.panicChanges = r.counter(ENGINE_COUNTERS.panicChanges);
    this.mirrorRequests = r.counter(ENGINE_COUNTERS.mirrorRequests);
    this.mirrorDurations = r.histogram(MIRROR_DURATION);
    this.mirrorDrops = r.counter(ENGINE_COUNTERS.mirrorDropped);
  }

  proxyError(direction: Direction, code: ErrorCode): void {
    this.errors.labels(direction, code).inc();
  }
  upstreamConnect(ok: boolean): void {
    this.connects.labels(ok ? 'ok' : 'failed').inc();
  }
  retry(service: string, reason: string): void {
    this.retries.labels(service, reason).inc();
  }
  retryBudgetExhausted(service: string): void {
    this.budgetExhausted.labels(service).inc();
  }
  rateLimited(direction: Direction, service: string, route: string): void {
    this.rateLimits.labels(direction, service, route).inc();
  }

  mirrored(service: string, mirror: string, subset: string, status: number, seconds: number): void {
    this.mirrorRequests.labels(service, mirror, subset, String(status), status === 0 || status >= 500 ? 'failure' : 'success').inc();
    this.mirrorDurations.labels(service, mirror, subset).observe(seconds);
  }
  mirrorDropped(service: string, mirror: string, subset: string, reason: MirrorDropReason): void {
    this.mirrorDrops.labels(service, mirror, subset, reason).inc();
  }

  /** Counts an ejection, return, breaker or panic change and feeds it to /stats (true); false: another kind, the caller's. */
  trafficEvent(e: TrafficEvent): boolean {
    if (e.type === 'panic') {
      this.panicChanges.labels(e.service, e.panicking ? 'panic' : 'normal').inc();
      this.feed.add('panic', e.service, '', panicDetail(e));
    } else if (e.type === 'eject' || e.type === 'return') {
      this.outlierEvents.labels(e.service, e.type).inc();
      this.feed.add(e.type, e.service, instanceOf(e.endpoint), e.reason);
    } else if (e.type === 'breaker') {
      this.breakerChanges.labels(e.service, e.to).inc();
      this.feed.add('breaker', e.service, instanceOf(e.endpoint), `${e.to}: ${e.reason}`);
    } else return false;
    return true;
  }
}

/** A /stats snapshot (src/api/stats.ts) of a data plane: the proxy's and the SDK's. */
export function statsSnapshot(id: string, startedAt: number, series: readonly SeriesStats[], feed: StatsEventFeed, sinceSeq: number, authz?: StatsSnapshot['authz']): StatsSnapshot {
  return {
    proxy: { id, startedAt },
    at: Date.now(),
    bounds: LATENCY_BUCKETS,
    series: statsSeries(series),
    ...(authz === undefined ? {} : { authz }),
    events: feed.since(sinceSeq),
    eventSeq: feed.seq,
  };
}
