/**
 * The SDK's metrics: the proxy's per-request families and engine counters, with their names,
 * labels and buckets (one definition: src/telemetry/request-metrics.ts), the request families
 * with one more label, `plane="sdk"`. Served as the proxy's admin serves them, `/metrics`
 * (Prometheus or OpenMetrics) and `/stats` (the JSON the control plane scrapes for the golden
 * signals and `skein stat`), by a server the SDK starts (`metrics: { listen }`) or by a handler
 * the app mounts (`metricsHandler()`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LATENCY_BUCKETS, STATS_MAX_EVENTS, type Direction, type StatsEvent, type StatsSnapshot } from '../api/stats.js';
import type { ErrorCode } from '../core/errors.js';
import { panicDetail, type TrafficEvent } from '../resilience/traffic-state.js';
import { exposition } from '../telemetry/exposition.js';
import { Registry, type Counter } from '../telemetry/prom.js';
import { ENGINE_COUNTERS, ListenerStats, requestFamilies, statsSeries, type SeriesStats } from '../telemetry/request-metrics.js';
import type { FinishedRequest } from './request.js';

export class SdkMetrics {
  readonly registry = new Registry();
  private readonly series: SeriesStats[] = [];
  private readonly listener: ListenerStats;
  private readonly startedAt = Date.now();
  private readonly events: StatsEvent[] = [];
  private eventSeq = 0;
  private readonly errors: Counter<'direction' | 'code'>;
  private readonly connects: Counter<'result'>;
  private readonly retries: Counter<'service' | 'reason'>;
  private readonly budgetExhausted: Counter<'service'>;
  private readonly rateLimits: Counter<'direction' | 'service' | 'route'>;
  private readonly outlierEvents: Counter<'service' | 'event'>;
  private readonly breakerChanges: Counter<'service' | 'to'>;
  private readonly panicChanges: Counter<'service' | 'to'>;

  constructor(
    /** Names the SDK to the control plane (its /stats, `skein stat`). */
    readonly id: string,
    workload: string,
    /** The calling service: the source of every series (null: unknown). */
    private readonly source: string | null,
  ) {
    const r = this.registry;
    this.listener = new ListenerStats(this.series, workload, 'outbound');
    requestFamilies(r, this.series, 'sdk');
    this.errors = r.counter(ENGINE_COUNTERS.errors);
    this.connects = r.counter(ENGINE_COUNTERS.connects);
    this.retries = r.counter(ENGINE_COUNTERS.retries);
    this.budgetExhausted = r.counter(ENGINE_COUNTERS.budgetExhausted);
    this.rateLimits = r.counter(ENGINE_COUNTERS.rateLimits);
    this.outlierEvents = r.counter(ENGINE_COUNTERS.outlierEvents);
    this.breakerChanges = r.counter(ENGINE_COUNTERS.breakerChanges);
    this.panicChanges = r.counter(ENGINE_COUNTERS.panicChanges);
  }

  // ---- what requests and the engine report ----

  finished(f: FinishedRequest): void {
    if (f.code !== null) this.errors.labels('outbound', f.code).inc();
    const e = f.endpoint;
    const failed = f.status === 0 || f.status >= 500 || f.code !== null;
    this.listener.record(this.source, f.service, f.route, e?.id ?? null, f.status, failed, f.seconds, f.requestBytes, f.responseBytes, false, e?.version ?? null);
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

  /** Ejections, returns, breaker and panic changes: counted, and in /stats's events. */
  trafficEvent(e: TrafficEvent): void {
    if (e.type === 'panic') {
      this.panicChanges.labels(e.service, e.panicking ? 'panic' : 'normal').inc();
      this.event('panic', e.service, '', panicDetail(e));
    } else if (e.type === 'eject' || e.type === 'return') {
      this.outlierEvents.labels(e.service, e.type).inc();
      this.event(e.type, e.service, e.endpoint, e.reason);
    } else if (e.type === 'breaker') {
      this.breakerChanges.labels(e.service, e.to).inc();
      this.event('breaker', e.service, e.endpoint, `${e.to}: ${e.reason}`);
    }
  }

  private event(type: string, service: string, endpoint: string, detail: string): void {
    const slash = endpoint.indexOf('/');
    this.events.push({ seq: ++this.eventSeq, time: Date.now(), type, service, instance: slash < 0 ? endpoint : endpoint.slice(slash + 1), detail });
    if (this.events.length > STATS_MAX_EVENTS) this.events.splice(0, this.events.length - STATS_MAX_EVENTS);
  }

  // ---- what is served ----

  /** Every series' totals since the SDK started, and the events after `sinceSeq` (the proxy's /stats). */
  snapshot(sinceSeq = 0): StatsSnapshot {
    return {
      proxy: { id: this.id, startedAt: this.startedAt },
      at: Date.now(),
      bounds: LATENCY_BUCKETS,
      series: statsSeries(this.series),
      events: this.events.filter((e) => e.seq > sinceSeq),
      eventSeq: this.eventSeq,
    };
  }

  exposition(accept?: string): Promise<{ contentType: string; text: string }> {
    return exposition(this.registry, accept);
  }

  /**
   * A request handler for node:http (or anything with its request and response): `/metrics`,
   * `/stats[?since=N]` and `/live`; anything else 404. The app mounts it, or `metrics.listen`
   * starts a server with it.
   */
  handler(): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      const url = new URL(req.url ?? '/', 'http://sdk');
      if (url.pathname === '/metrics') {
        this.exposition(req.headers.accept).then(
          (m) => res.writeHead(200, { 'content-type': m.contentType }).end(m.text),
          (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`),
        );
        return;
      }
      if (url.pathname === '/stats') {
        const since = Number(url.searchParams.get('since') ?? 0);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.snapshot(Number.isSafeInteger(since) && since > 0 ? since : 0)));
        return;
      }
      if (url.pathname === '/live') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: /metrics, /stats and /live are served here\n');
    };
  }
}
